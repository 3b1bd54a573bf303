"""What every benchmark writes: ``<out>/<name>.json`` (the figures) and ``<name>.md`` (the table), with the CPU named."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (figures here differ 2x between the machines this project runs on)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(out: Path, name: str, report: dict[str, Any], markdown: str) -> None:
    """Write the report as JSON and its table as Markdown into ``out``, and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)
