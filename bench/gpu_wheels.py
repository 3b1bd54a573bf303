"""The GPU check's --wheels: a GPU machine brings its own torch but may lack the project's pure-Python
dependencies (hydra-core, omegaconf, ...), and has no network; the wheels carried in a folder fill that gap
without touching any package the machine already has at an accepted version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, Any]:
    """pyproject.toml's dependencies, by canonical name."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in deps}


def wheel_requirements(wheel: Path) -> list[Any]:
    """The Requires-Dist of a wheel that apply here without extras."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8", "replace").splitlines()
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def install_missing(wheels: Path, site: Path) -> list[str]:
    """Install into ``site`` the wheels in ``wheels`` of packages this Python lacks, or has at a version that
    pyproject.toml or another wheel there does not accept (when the wheel's own version is accepted; e.g.
    hydra-core's antlr4-python3-runtime==4.9.*); return their file names. ``site`` goes first on sys.path (and,
    via PYTHONPATH, in every process started later), ahead of site-packages."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.utils import canonicalize_name, parse_wheel_filename

    site.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(site))
    found = sorted(wheels.glob("*.whl"))
    asked: dict[str, list[Any]] = {}
    for req in [*requirements().values(), *(r for wheel in found for r in wheel_requirements(wheel))]:
        asked.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    chosen = []
    for wheel in found:
        name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
        try:
            have = version(name)
        except PackageNotFoundError:
            chosen.append(wheel)
            continue
        specs = asked.get(canonicalize_name(name), [])
        if not all(s.contains(have, prereleases=True) for s in specs) and all(
            s.contains(wheel_version, prereleases=True) for s in specs
        ):
            chosen.append(wheel)
    if chosen:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-index",
            "--no-deps",
            "--no-compile",
            "--disable-pip-version-check",
            "--upgrade",
            "--target",
            str(site),
            *map(str, chosen),
        ]
        subprocess.run(cmd, check=True)
    import importlib

    importlib.invalidate_caches()
    return [w.name for w in chosen]


def unmet_requirements() -> list[str]:
    """pyproject.toml's requirements that this Python's packages do not meet."""
    from importlib.metadata import PackageNotFoundError, version

    unmet = []
    for req in requirements().values():
        try:
            have = version(req.name)
        except PackageNotFoundError:
            unmet.append(f"{req} (missing)")
            continue
        if not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req} (have {have})")
    return unmet
