"""The Makefile's tiers: a marker expression of the user's own narrows a tier, never replaces it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fmnist_lightning.config.files import project_root

# It starts pytest itself three times (about 30 s): not for the fast tier.
pytestmark = pytest.mark.integration


def collected(*args: str) -> set[str]:
    """The test files whose tests ``pytest --collect-only`` keeps with ``args``."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            *args,
            "tests/test_requeue.py",
            "tests/test_slurm.py",
            "tests/test_tiers.py",
        ],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 5), done.stdout[-2000:] + done.stderr[-2000:]  # 5: nothing collected
    return {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}


def test_a_marker_expression_narrows_a_tier_and_never_replaces_it() -> None:
    # -m "not cuda" alone would keep the simulated-host tests; under --tier=full they stay out.
    assert collected("--tier=full", "-m", "not cuda") == {"tests/test_requeue.py", "tests/test_tiers.py"}
    assert collected("--tier=hosts") == {"tests/test_slurm.py"}
    assert collected("--tier=fast") == {"tests/test_requeue.py"}
    assert collected("--tier=full", "-m", "slow") == set()
