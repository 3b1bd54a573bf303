"""``python -m fmnist_lightning.summarize <sweep dir> [--metric NAME]``: rebuild a sweep's summary.
``python -m fmnist_lightning.summarize --storage <url> --study <name> [--out DIR]``: a study's summary.

Writes summary.csv, summary.md and summary.png (and summary_folds.csv for a sweep over
``data.fold``). From a sweep directory, it reads the job directories alone, so it also
summarises a sweep that is still running or was interrupted (``results.sweep_results``); from a
study's storage, it reads what each trial's job stored there, so it works on a machine that ran
none of the trials (``results.study_results``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fmnist_lightning.cli.commands import OneLineArgumentParser, argparse_command


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog="python -m fmnist_lightning.summarize",
        description="Rebuild summary.csv, summary.md and summary.png of a sweep (also one that was interrupted), "
        "or write them for an Optuna study from its storage alone.",
    )
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="the sweep directory, e.g. outputs/multirun/<time>")
    parser.add_argument("--metric", help="rank by this metric (default: the sweep's optimized_metric)")
    parser.add_argument(
        "--machine",
        action="store_true",
        default=None,
        help="show each job's host and CPU in summary.md (shown anyway when jobs ran on several)",
    )
    parser.add_argument(
        "--storage",
        help="an Optuna study's storage: sqlite:///<file>, journal:///<file> or a "
        "database URL such as postgresql+psycopg://user@host/db",
    )
    parser.add_argument("--study", help="the study's name (default: the storage's only study)")
    parser.add_argument("--out", type=Path, help="where --storage writes the summary (default outputs/studies/<study>)")
    args = parser.parse_args(argv)
    if (args.sweep_dir is None) == (args.storage is None):
        parser.error("pass a sweep directory, or --storage <url> --study <name>")
    if args.storage is None and (args.study or args.out):
        parser.error("--study and --out go with --storage")
    return args


def summarize(args: argparse.Namespace) -> None:
    """Write the summary files and print summary.md."""
    if args.storage:
        from fmnist_lightning.results.study_results import study_summary

        summary = study_summary(args.storage, args.study, args.out, args.metric)
    else:
        from fmnist_lightning.results.summary_writers import write_summary

        summary = write_summary(args.sweep_dir, args.metric, args.machine)
    print((summary.sweep_dir / "summary.md").read_text())
    print("Wrote " + ", ".join(str(p) for p in summary.written))


# argparse, not Hydra: the command composes no config (it reads what the jobs wrote), its subject is a directory
# given as a positional path, and a Hydra run directory of its own would be one more folder beside the sweep's.
cli = argparse_command(parse_args, summarize, where=lambda args: args.sweep_dir)


if __name__ == "__main__":
    cli()
