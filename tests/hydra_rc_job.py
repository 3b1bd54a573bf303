"""The project against the next Hydra, from a venv of its own: ``make test-hydra-rc`` (CI runs it too).

Builds ``.venv-hydra-rc`` with this checkout's dependencies (pyproject.toml, this machine's torch builds from
constraints.txt; hard links to ``make install``'s .venv where there is one), except hydra-core and omegaconf, which
are the release candidates below; the package itself
goes in with ``--no-deps``, since pyproject.toml still caps hydra-core below 1.4 until 1.4 is final. Then, with
Hydra's deprecation warnings turned into errors (``HYDRA_DEPRECATION_WARNINGS_AS_ERRORS=1``), it runs:

1. the fast test tier (``make test-fast``'s selection);
2. a 2-trial Optuna search (``hparams_search=lr_wd``) on a few batches, which must finish with its two trials
   complete and print no warning.

Usage: python tests/hydra_rc_job.py [--hydra-core 1.4.0rc3] [--omegaconf 2.4.1rc1] [--venv .venv-hydra-rc]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("dev", "sweeps", "tracking", "demo")  # as make install
SEARCH = [
    "hparams_search=lr_wd",
    "hydra.sweeper.n_trials=2",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "test=false",
    "report=false",
    "trainer.enable_progress_bar=false",
]


def requirements(hydra_core: str, omegaconf: str) -> list[str]:
    """pyproject.toml's dependencies and extras, with the Hydra release candidates in place of their lines."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in EXTRAS for r in project["optional-dependencies"][extra])]

    def name(requirement: str) -> str:
        return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()

    return [r for r in wanted if name(r) not in ("hydra-core", "omegaconf")] + [
        f"hydra-core=={hydra_core}",
        f"omegaconf=={omegaconf}",
    ]


def clone_main_venv(venv: Path) -> bool:
    """``venv`` as hard links to ``make install``'s .venv (seconds, no space), if that is complete and on the same
    filesystem: pip then swaps in the release candidates alone. pip never writes into an installed file (it
    removes and writes new ones), so .venv is untouched; the stamp, the one file written in place, is unlinked."""
    main = ROOT / ".venv"
    if not (main / ".installed").is_file() or os.stat(main).st_dev != os.stat(venv.parent).st_dev:
        return False
    if subprocess.run(["cp", "-al", str(main), str(venv)]).returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        return False
    (venv / ".installed").unlink()
    return True


def build_venv(venv: Path, hydra_core: str, omegaconf: str) -> Path:
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = json.dumps([*requirements(hydra_core, omegaconf), (ROOT / "constraints.txt").read_text()])
    if stamp.is_file() and stamp.read_text() == wanted:
        return python
    if not python.exists() and not clone_main_venv(venv):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--progress-bar", "off"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), *requirements(hydra_core, omegaconf)], check=True)
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    stamp.write_text(wanted)
    return python


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hydra-core", default="1.4.0rc3")
    parser.add_argument("--omegaconf", default="2.4.1rc1")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-hydra-rc")
    args = parser.parse_args()
    python = build_venv(args.venv, args.hydra_core, args.omegaconf)
    versions = subprocess.run(
        [str(python), "-c", "import hydra, omegaconf; print(hydra.__version__, omegaconf.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    print(f"hydra-core {versions[0]}, omegaconf {versions[1]} in {args.venv}", flush=True)
    env = os.environ | {"HYDRA_DEPRECATION_WARNINGS_AS_ERRORS": "1"}
    tests = subprocess.run(
        # As make test-fast: no fixture of the tier trains, so tests are shared out one by one.
        [str(python), "-m", "pytest", "-n", "2", "--dist", "worksteal", "--tier=fast", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
    )
    if tests.returncode != 0:
        return tests.returncode
    return search(python, env)


def search(python: Path, env: dict[str, str]) -> int:
    """The 2-trial search: exit status 0, both trials complete in its study, and no warning on the console."""
    import sqlite3

    tmp = Path(tempfile.mkdtemp(prefix="hydra-rc-search-"))
    try:
        done = subprocess.run(
            [str(python), "-m", "fmnist_lightning", *SEARCH, f"hydra.sweep.dir={tmp}/sweep", f"paths.log_dir={tmp}"],
            cwd=ROOT,
            env=env | {"PYTHONWARNINGS": "default"},
            capture_output=True,
            text=True,
        )
        output = done.stdout + done.stderr
        warnings = [line for line in output.splitlines() if re.search(r"\bWarning\b|warn", line)]
        states = []
        if (tmp / "sweep" / "optuna.db").is_file():
            with sqlite3.connect(tmp / "sweep" / "optuna.db") as db:
                states = [state for (state,) in db.execute("SELECT state FROM trials ORDER BY number")]
        print(f"search: exit {done.returncode}, trials {states}, warnings {len(warnings)}")
        if done.returncode != 0 or states != ["COMPLETE", "COMPLETE"] or warnings:
            print(output[-4000:])
            return 1
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
