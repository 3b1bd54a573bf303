"""An ensemble checkpoint's members one by one, and together, on the run's validation split (or the test set).

What the ensemble buys over its own members is a paired figure: the same run, the same images, the same
test-time views. ``model=ensemble`` checkpoints only (``bench/recipes.py --keep <dir>`` keeps a pilot's):

    python bench/ensemble_members.py outputs/teachers/deep_x3_e32_seed0.ckpt --out bench/results/zen4/<name>

Writes ``members.json`` and ``members.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from fmnist_lightning.results.split_metrics import evaluate_split, prediction_trainer
from fmnist_lightning.training.checkpoint_files import restore_run
from fmnist_lightning.training.provenance import cpu_model

VIEWS = {"plain": (False, 0), "mirror": (True, 0), "mirror + 1 px shifts": (True, 1)}


def accuracies(ckpt: Path, split: str, root: str | None, limit: int | None) -> dict[str, list[float]]:
    """``{view: [member 0, member 1, ..., the ensemble]}``: each accuracy on the split with that view's TTA."""
    run = restore_run(ckpt)
    members = getattr(run.module.net, "members", None)
    if members is None:
        raise SystemExit(f"error: {ckpt} is not an ensemble's checkpoint (model=ensemble); it has no members")
    datamodule = run.datamodule(root=root)
    trainer = prediction_trainer(accelerator="cpu", precision=run.precision, limit_batches=limit)
    ensemble, out = run.module.net, {}
    for view, (tta, shift) in VIEWS.items():
        run.module.tta, run.module.tta_shift = tta, shift
        row = []
        for net in [*members, ensemble]:
            run.module.net = net
            row.append(evaluate_split(run.module, datamodule, split, trainer).accuracy)
        run.module.net = ensemble
        out[view] = row
    return out


def markdown(report: dict[str, Any]) -> str:
    n = len(next(iter(report["accuracy"].values()))) - 1
    lines = [
        f"# An ensemble's members alone and together ({report['cpu']}, {report['date']})",
        "",
        f"`{report['command']}`. Accuracy on the run's {report['split']} split, each view's test-time augmentation.",
        "",
        f"| view | {' | '.join(f'member {k}' for k in range(n))} | members' mean | ensemble | gain |",
        f"|---|{'---:|' * n}---:|---:|---:|",
    ]
    for view, row in report["accuracy"].items():
        mean = statistics.fmean(row[:-1])
        cells = " | ".join(f"{100 * a:.2f}%" for a in row[:-1])
        lines.append(
            f"| {view} | {cells} | {100 * mean:.2f}% | **{100 * row[-1]:.2f}%** | {100 * (row[-1] - mean):+.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path, help="a model=ensemble run's checkpoint")
    parser.add_argument("--split", choices=("val", "test"), default="val")
    parser.add_argument("--root", help="the dataset (default: the run's data.root)")
    parser.add_argument("--limit", type=int, help="batches per evaluation (a smoke test's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    report = {
        "command": "python bench/ensemble_members.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "split": args.split,
        "accuracy": accuracies(args.ckpt, args.split, args.root, args.limit),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "members.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "members.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
