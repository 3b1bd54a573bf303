"""The Ctrl-C and SIGTERM test, run again and again while a full training shares the two cores.

The test once timed out in CI only when other work shared the machine. This starts the default training
(the whole dataset, as ``make train`` runs it, for more epochs than the loop needs) in the background,
runs ``tests/test_reliability.py``'s interrupt test ``--times`` times one after the other beside it, and
stops the training. Every pass and its time is written down, the CPU named.

Usage: python bench/interrupt_beside_training.py [--times 10]
Writes bench/results/interrupt_beside_training.json and .md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from results_files import cpu_name, write_results  # noqa: E402  (bench/ is not a package; its helper sits beside it)

TEST = "tests/test_reliability.py::test_sigterm_and_ctrl_c_save_a_checkpoint_and_say_how_to_resume"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--times", type=int, default=10)
    return parser.parse_args()


def start_training(log_dir: str) -> subprocess.Popen[bytes]:
    """The default training in its own session, so that it and its workers can be stopped as one group."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fmnist_lightning",
            f"paths.log_dir={log_dir}",
            "trainer.max_epochs=1000",
            "report=false",
            "trainer.enable_progress_bar=false",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_training(training: subprocess.Popen[bytes], log_dir: str) -> None:
    """Beside a training that is really training, not one still loading."""
    while not list(Path(log_dir).glob("runs/*/tensorboard/events.*")):
        if training.poll() is not None:
            raise SystemExit("error: the background training ended before it began training")
        time.sleep(1)


def repeat_test(times: int) -> list[dict[str, Any]]:
    """Up to ``times`` passes, stopping at the first failure: its output is what explains it."""
    runs = []
    for i in range(times):
        started = time.monotonic()
        test = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        seconds = time.monotonic() - started
        passed = test.returncode == 0
        runs.append(
            {
                "pass": i + 1,
                "passed": passed,
                "seconds": round(seconds, 1),
                "summary": test.stdout.strip().splitlines()[-1] if test.stdout.strip() else "",
            }
        )
        print(f"{i + 1}: {'passed' if passed else 'FAILED'} in {seconds:.1f} s", flush=True)
        if not passed:
            print(test.stdout[-4000:], file=sys.stderr)
            break
    return runs


def markdown(report: dict[str, Any], times: int) -> str:
    beside = report["training_beside_throughout"]
    rows = "\n".join(
        f"| {r['pass']} | {'passed' if r['passed'] else 'failed'} | {r['seconds']} |" for r in report["runs"]
    )
    return (
        f"# The interrupt test beside a training\n\nCPU: {report['cpu']}. Command: "
        f"`python bench/interrupt_beside_training.py --times {times}`.\n\n"
        f"The default training (whole dataset, `trainer.max_epochs=1000`) ran beside every pass: "
        f"{'yes' if beside else 'no'}. Each pass runs both cases (SIGTERM and Ctrl-C).\n\n"
        f"| pass | result | seconds (both cases) |\n|---|---|---|\n{rows}\n\n"
        f"{report['passed_in_a_row']} of {times} passed in a row.\n"
    )


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        training = start_training(tmp)
        try:
            wait_until_training(training, tmp)
            runs = repeat_test(args.times)
            beside = training.poll() is None
        finally:
            os.killpg(training.pid, signal.SIGTERM)
            training.wait()
    report = {
        "cpu": cpu_name(),
        "test": TEST,
        "training_beside_throughout": beside,
        "runs": runs,
        "passed_in_a_row": next((i for i, r in enumerate(runs) if not r["passed"]), len(runs)),
    }
    write_results(HERE / "results", "interrupt_beside_training", report, markdown(report, args.times))


if __name__ == "__main__":
    main()
