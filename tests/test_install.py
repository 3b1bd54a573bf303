"""The package's version ranges: the build machine's pins agree with them, and they resolve on Python 3.11-3.13."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = 77  # bench/resolve_check.py: the package index cannot be reached


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def constraints() -> dict[str, str]:
    """constraints.txt as {name: pinned version}."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # one exact pin per line
            assert spec.operator == "==", f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_constraints_pin_versions_the_package_accepts() -> None:
    requirements = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project()["dependencies"]}
    pins = constraints()
    assert pins, "constraints.txt pins nothing"
    for name, pinned in pins.items():
        assert name in requirements, f"constraints.txt pins {name}, which pyproject.toml does not depend on"
        assert requirements[name].specifier.contains(pinned), (
            f"{name}=={pinned} is outside pyproject's {requirements[name]}"
        )
        # The package itself pins nothing exactly: that is the constraints file's job.
        assert all(s.operator not in ("==", "===") for s in requirements[name].specifier), requirements[name]


def test_make_install_venv_runs_the_pinned_builds() -> None:
    """`make install` (pip -c constraints.txt) gives the venv exactly the pinned torch and torchvision."""
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve() or not (venv / ".installed").is_file():
        pytest.skip("not running in the venv that `make install` made")
    for name, pinned in constraints().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is pinned in constraints.txt but not installed")
        assert installed.split("+")[0] == pinned, f"{name} {installed} installed; constraints.txt pins {pinned}"


@pytest.mark.slow
@pytest.mark.timeout(900)  # as long as its subprocess may take: a slow index is a skip or a failure of its own
def test_ranges_resolve_on_python_311_312_313(tmp_path: Path) -> None:
    """pip resolves '.[dev,sweeps]' from the index's metadata for CPython 3.11, 3.12 and 3.13 on Linux x86-64."""
    out = tmp_path / "resolve.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "resolve_check.py"), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode == SKIPPED:
        pytest.skip(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["python"]: row for row in report["rows"]}
    assert sorted(rows) == ["3.11", "3.12", "3.13"]
    dependencies = [Requirement(r) for r in project()["dependencies"]]
    for python, row in rows.items():
        assert row["resolved"], f"Python {python}: {row['blocked_by']}"
        for req in dependencies:
            chosen = row["versions"].get(canonicalize_name(req.name))
            assert chosen and req.specifier.contains(chosen, prereleases=True), f"Python {python}: {req.name} {chosen}"


def test_the_hydra_rc_job_installs_the_project_with_the_release_candidates_only() -> None:
    # tests/hydra_rc_job.py (make test-hydra-rc): every dependency of make install's extras, Hydra's two replaced.
    spec = importlib.util.spec_from_file_location("hydra_rc_job", ROOT / "tests" / "hydra_rc_job.py")
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    requirements = job.requirements

    wanted = [Requirement(r) for r in requirements("1.4.0rc3", "2.4.1rc1")]
    by_name = {canonicalize_name(r.name): r for r in wanted}
    assert str(by_name["hydra-core"].specifier) == "==1.4.0rc3" and str(by_name["omegaconf"].specifier) == "==2.4.1rc1"
    assert len(wanted) == len(by_name)  # one line per package: no second hydra-core spec
    listed = {canonicalize_name(Requirement(r).name) for r in project()["dependencies"]}
    for extra in ("dev", "sweeps", "tracking", "demo"):
        listed |= {canonicalize_name(Requirement(r).name) for r in project()["optional-dependencies"][extra]}
    assert set(by_name) == listed
