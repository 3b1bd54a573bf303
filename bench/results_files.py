"""What every benchmark writes: ``<out>/<name>.json`` (the figures) and ``<name>.md`` (the table), the CPU
named."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name, with its family, model and widest vector unit: figures here differ 2x between
    the machines this project runs on, and "AMD EPYC" alone is a Zen 3 (family 25 model 1, AVX2) or a Zen 4."""
    try:
        info = dict(
            line.split(":", 1)
            for line in Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
            if ":" in line
        )
    except OSError:
        return platform.processor() or platform.machine()
    info = {k.strip(): v.strip() for k, v in info.items()}
    flags = set(info.get("flags", "").split())
    vector = next((name for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if name in flags), "no AVX2")
    family, model = info.get("cpu family", "?"), info.get("model", "?")
    return f"{info.get('model name', platform.machine())} (family {family} model {model}, {vector})"


def write_results(out: Path, name: str, report: dict[str, Any], markdown: str) -> None:
    """Write the report as JSON and its table as Markdown into ``out``, and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
