"""``python -m fmnist_lightning.summarize <sweep dir> [--metric NAME]``: rebuild a sweep's summary.

Writes summary.csv, summary.md and summary.png (and summary_folds.csv for a sweep over
``data.fold``) from the job directories alone, so it also summarises a sweep that is
still running or was interrupted; see ``results.sweep_summary``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fmnist_lightning.cli.exits import exit_on_closed_output, exit_with_failure
from fmnist_lightning.errors import FmnistError
from fmnist_lightning.results.sweep_summary import write_summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fmnist_lightning.summarize",
        description="Rebuild summary.csv, summary.md and summary.png of a sweep (also one that was interrupted).",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep directory, e.g. outputs/multirun/<time>")
    parser.add_argument("--metric", help="rank by this metric (default: the sweep's optimized_metric)")
    parser.add_argument("--machine", action="store_true", default=None,
                        help="show each job's host and CPU in summary.md (shown anyway when jobs ran on several)")
    args = parser.parse_args(argv)
    try:
        summary = write_summary(args.sweep_dir, args.metric, args.machine)
    except FmnistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # e.g. a job directory whose files were damaged by hand
        exit_with_failure(exc, args.sweep_dir)
    try:
        print((args.sweep_dir / "summary.md").read_text())
        print("Wrote " + ", ".join(str(p) for p in summary.written))
    except BrokenPipeError:
        exit_on_closed_output()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
