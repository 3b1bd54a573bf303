"""Where a run came from: the code (git commit, uncommitted changes), the packages, the machine, the
precision it ran at, its command line, and when it started and ended.

Training writes it to ``run.json`` (``config.files.RUN_FILE``) in the run directory (at the start, and again
with the end time),
stores it in every checkpoint beside the config, shows it in ``report.md`` and logs it to
TensorBoard as text; the sweep summary reads its host and CPU, and exports carry the source run's
commit and precision. Everything here is read, never guessed: a field that cannot be known (no
git, no checkout, a package not installed) is null.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from fmnist_lightning.training.precision import cpu_flags

# The packages whose versions decide a result (or whether a command runs at all).
VERSIONED = ("torch", "torchvision", "lightning", "hydra-core", "omegaconf", "torchmetrics", "optuna", "onnxruntime")
# CPU features that change speed or numerics here: AVX2/AVX-512 kernels, native bfloat16 (precision=auto).
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
CODE_DIR = Path(__file__).resolve().parents[1]


def now() -> str:
    """The current time in UTC, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _git(where: Path, *args: str) -> str | None:
    """git's output (not stripped: a status line starts with a space), or None when git cannot answer."""
    try:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):  # no git on the machine, or a hung filesystem
        return None
    return done.stdout if done.returncode == 0 else None


def code_state(where: Path = CODE_DIR) -> dict[str, Any] | None:
    """The git commit of the checkout that holds ``where`` and whether it has uncommitted changes; None when
    the code is not in a git checkout (an installed wheel)."""
    commit = _git(where, "rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git(where, "status", "--porcelain") or ""
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return {
        "commit": commit.strip(),
        "dirty": bool(changed),
        "changed_files": changed[:20],
        "checkout": (_git(where, "rev-parse", "--show-toplevel") or "").strip() or None,
    }


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux), else what the platform says."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    flags = cpu_flags()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_features": [f for f in CPU_FEATURES if f in flags],
        "cores": os.cpu_count(),
        "gpus": gpus,
        "gpu_count": len(gpus),
        "platform": platform.platform(),
    }


def provenance(precision: str, overrides: list[str], started: str | None = None) -> dict[str, Any]:
    """The run's provenance record (``ended`` is filled in when it ends)."""
    return {
        "argv": list(sys.argv),
        "overrides": list(overrides),
        "cwd": os.getcwd(),
        "code": code_state(),
        "packages": package_versions(),
        "machine": machine(),
        "precision": precision,
        "started": started or now(),
        "ended": None,
    }


def describe(record: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows for people: report.md's provenance table and TensorBoard's text."""
    code, host, packages = record.get("code"), record.get("machine") or {}, record.get("packages") or {}
    if code:
        source = f"{code['commit'][:12]}" + (" with uncommitted changes" if code.get("dirty") else "")
    else:
        source = "not a git checkout"
    gpus = ", ".join(host.get("gpus") or []) or "none"
    versions = ", ".join(
        f"{k} {v}" for k, v in packages.items() if v and k in ("python", "torch", "lightning", "hydra-core")
    )
    rows = [
        ("code", source),
        (
            "host",
            f"{host.get('hostname', '?')}: {host.get('cpu', '?')}, {host.get('cores', '?')} cores"
            + (f" ({', '.join(host['cpu_features'])})" if host.get("cpu_features") else ""),
        ),
        ("GPUs", gpus),
        ("precision", str(record.get("precision"))),
        ("packages", versions),
        ("command", " ".join(record.get("overrides") or []) or "(no overrides)"),
        ("started", str(record.get("started"))),
    ]
    if record.get("ended"):
        rows.append(("ended", str(record["ended"])))
    return rows


def as_markdown(record: dict[str, Any]) -> str:
    """A two-column Markdown table of ``describe``."""
    lines = ["| | |", "|---|---|"] + [f"| {name} | {value.replace('|', '/')} |" for name, value in describe(record)]
    return "\n".join(lines)
