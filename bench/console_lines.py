"""How many lines a run prints to the console, progress-bar refreshes aside, here and at an earlier commit.

Runs the training command as ``make train`` does (the default configuration, plus any overrides given)
from this checkout and, with ``--baseline <commit>``, from a ``git worktree`` of that commit in the same
Python environment, one after the other. stdout and stderr are read together, as a terminal shows them.
The output is replayed as a terminal draws it (tqdm redraws its bars in place with carriage returns and
cursor movements); the lines left on screen count, except the progress bars themselves, which are
reported apart.

Usage: python bench/console_lines.py [--baseline 1fd0887] [overrides ...]
Writes bench/results/console_lines.json and .md, the CPU named in both.
"""

from __future__ import annotations

import argparse
import os
import re
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

# What tqdm draws: "Epoch 0:  40%|####   | 8/20 [00:01<00:02, 5.1it/s, ...]" or "Testing: |   | 0/? [00:00<?, ?it/s]"
BAR = re.compile(r"\|\s*\d+/(\d+|\?) \[")


def screen(output: str) -> list[str]:
    """The lines a terminal shows once the output has ended: a carriage return starts a line over, a newline
    moves down one line, ``ESC [ n A`` moves up, as tqdm uses them to redraw its bars in place."""
    lines, row, col = [""], 0, 0
    for token in re.split(r"(\r|\n|\x1b\[[0-9;]*[A-Za-z])", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b["):
            if token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
            elif token.endswith("K"):  # erase to the end of the line
                lines[row] = lines[row][:col]
        elif token:
            lines[row] = lines[row][:col] + token + lines[row][col + len(token) :]
            col += len(token)
    while lines and not lines[-1].strip():
        lines.pop()
    return [line.rstrip() for line in lines]


def counted(output: str) -> tuple[list[str], int]:
    """The lines the terminal shows at the end, without progress bars; and how many bars it still shows."""
    shown = screen(output)
    bars = [line for line in shown if BAR.search(line)]
    return [line for line in shown if not BAR.search(line)], len(bars)


def run(checkout: Path, overrides: list[str]) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(checkout / "src")}  # the checkout's package, not the installed one
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fmnist_lightning", *overrides, f"hydra.run.dir={tmp}/run"]
        started = time.perf_counter()
        # Bytes: text mode would turn tqdm's carriage returns into newlines.
        done = subprocess.run(cmd, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - started
    output = done.stdout.decode("utf-8", errors="replace")
    lines, bars = counted(output)
    return {
        "returncode": done.returncode,
        "raw_lines": output.count("\n"),
        "lines": len(lines),
        "bar_lines": bars,
        "seconds": round(seconds, 1),
        "console": lines,
    }


def markdown(report: dict[str, Any]) -> str:
    rows = [
        f"| {report['labels'][arm]} | {report[arm]['lines']} | {report[arm]['bar_lines']} | "
        f"{report[arm]['raw_lines']} | "
        f"{report[arm]['seconds']:.0f} |"
        for arm in ("baseline", "new")
        if arm in report
    ]
    new = "\n".join(report["new"]["console"])
    return "\n".join(
        [
            f"# Console lines of `{report['command_line']}` ({report['cpu']}, {report['date']})",
            "",
            f"`{report['command']}`. Lines left on a terminal's screen at the end, progress bars aside (see "
            "bench/console_lines.py); the bars left on screen, and the newlines written in all, beside them.",
            "",
            "| checkout | lines | progress bars | newlines written | run (s) |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "What this checkout printed, progress-bar refreshes aside:",
            "",
            "```text",
            new,
            "```",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a commit whose CLI runs the same command first")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("overrides", nargs="*", help="overrides for both runs (default: none, as make train)")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    report: dict[str, Any] = {
        "cpu": cpu_name(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/console_lines.py " + " ".join(sys.argv[1:]),
        "command_line": " ".join(["python -m fmnist_lightning", *args.overrides]),
        "labels": {"new": f"this checkout ({head})"},
    }
    if args.baseline:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = Path(tmp) / "baseline"
            subprocess.run(
                ["git", "worktree", "add", "--detach", "--quiet", str(baseline), args.baseline], cwd=ROOT, check=True
            )
            try:
                # The offline dataset sits beside the checkout, not beside a temporary worktree.
                report["baseline"] = run(baseline, [f"data.root={ROOT.parent / 'shared' / 'data'}", *args.overrides])
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(baseline)], cwd=ROOT, check=False)
        report["labels"]["baseline"] = f"at {args.baseline}"
    report["new"] = run(ROOT, args.overrides)
    write_results(args.out, "console_lines", report, markdown(report))


if __name__ == "__main__":
    main()
