"""Training throughput: a reference notebook's own loop against fmnist_lightning's CLI, on this machine.

Arms (each cell in its own process, so its start-up and peak memory are its own):

1. notebook:   the loop of reference notebook 000 (shared/reference/000_bc81505254e3a9b2.txt: "TinyVGG
               (CNN Explainer) ... 5 epochs ... batches of 32", section 3), written the way that course
               writes it: its own TinyVGG class (two conv blocks, hidden 10), torchvision FashionMNIST with
               per-image transforms, DataLoader(batch_size=32, shuffle=True), CrossEntropyLoss,
               SGD(lr=0.1), and per batch ``train_loss += loss.item()`` and an accuracy with ``.item()``.
               Section 4's RandAugment row adds ``transforms.RandAugment()`` to its transform, the way it does.
2. batched:    ``python -m fmnist_lightning`` as a user runs it (default callbacks, loggers and progress bar)
               with the same model size, optimizer, lr and batch: model=tinyvgg optim=sgd optim.lr=0.1
               optim.momentum=0 sched=none data.batch_size=32 aug=<aug>; the project's batched data path.
3. per_sample: the same command with data.pipeline=per_sample (torchvision transforms per image).
4. floor:      a plain PyTorch loop over in-memory tensors with the framework's TinyVGG and SGD, no
               augmentation: the least a training step costs here.

Every arm times the same number of steps after the same warm-up, from the end of the last
warm-up step to the end of the last timed step (data loading and augmentation included).
The cells are interleaved (every arm of every augmentation once per repeat, the order
rotated between repeats) and repeated; the table shows the median and the min-max.

Usage: python bench/throughput.py [--repeats 3] [--images 6400] [--augs none light randaugment] [--smoke]
Writes bench/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ARMS = ("notebook", "batched", "per_sample")
BATCH = 32
LR = 0.1


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- arm 1: the notebook, as written there --------------------------------------------------------------------


def _notebook_model():
    from torch import nn

    class FashionMNISTModelV2(nn.Module):
        """TinyVGG from the CNN Explainer website."""

        def __init__(self, input_shape: int, hidden_units: int, output_shape: int) -> None:
            super().__init__()
            self.block_1 = nn.Sequential(
                nn.Conv2d(input_shape, hidden_units, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden_units, hidden_units, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            )
            self.block_2 = nn.Sequential(
                nn.Conv2d(hidden_units, hidden_units, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(hidden_units, hidden_units, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 7 * 7, output_shape))

        def forward(self, x):
            return self.classifier(self.block_2(self.block_1(x)))

    return FashionMNISTModelV2(input_shape=1, hidden_units=10, output_shape=10)


def run_notebook(root: str, aug: str, warmup: int, steps: int) -> dict[str, Any]:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    augment = {
        "none": [],
        "light": [transforms.RandomRotation(10), transforms.RandomHorizontalFlip()],
        "randaugment": [transforms.RandAugment()],
    }[aug]
    train_data = datasets.FashionMNIST(
        root=root, train=True, download=False, transform=transforms.Compose([*augment, transforms.ToTensor()])
    )
    train_dataloader = DataLoader(train_data, batch_size=BATCH, shuffle=True)
    model_2 = _notebook_model()
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(params=model_2.parameters(), lr=LR)

    def accuracy_fn(y_true, y_pred):
        correct = torch.eq(y_true, y_pred).sum().item()
        return (correct / len(y_pred)) * 100

    train_loss, train_acc = 0, 0
    model_2.train()
    for batch, (X, y) in enumerate(train_dataloader):
        y_pred = model_2(X)
        loss = loss_fn(y_pred, y)
        train_loss += loss.item()
        train_acc += accuracy_fn(y_true=y, y_pred=y_pred.argmax(dim=1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if batch + 1 == warmup:
            start = time.perf_counter()
        if batch + 1 == warmup + steps:
            break
    return {"img_per_s": steps * BATCH / (time.perf_counter() - start), "peak_rss_mb": _peak_rss_mb()}


# --- arm 4: the floor ---------------------------------------------------------------------------------------------


def run_floor(root: str, warmup: int, steps: int) -> dict[str, Any]:
    import torch

    from fmnist_lightning.data.datamodule import normalize
    from fmnist_lightning.data.fashion_mnist import NORMALIZATION
    from fmnist_lightning.data.idx_files import load_split
    from fmnist_lightning.models.registry import create_model

    images, labels = load_split(Path(root), "train")
    model = create_model("tinyvgg", channels_last=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    criterion = torch.nn.CrossEntropyLoss()
    order = torch.randperm(len(labels)).split(BATCH)
    model.train()
    for i, idx in enumerate(order[: warmup + steps]):
        loss = criterion(model(normalize(images[idx], *NORMALIZATION["dataset"])), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i + 1 == warmup:
            start = time.perf_counter()
    return {"img_per_s": steps * BATCH / (time.perf_counter() - start), "peak_rss_mb": _peak_rss_mb()}


# --- arms 2 and 3: the real CLI -------------------------------------------------------------------------------


def run_cli(root: str, aug: str, pipeline: str, warmup: int, steps: int, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timing.json"
        cmd = [
            sys.executable,
            "-m",
            "fmnist_lightning",
            "model=tinyvgg",
            f"aug={aug}",
            f"data.pipeline={pipeline}",
            "optim=sgd",
            f"optim.lr={LR}",
            "optim.momentum=0",
            "optim.weight_decay=0",
            "sched=none",
            f"data.batch_size={BATCH}",
            f"data.root={root}",
            "data.download=false",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={warmup + steps}",
            "trainer.limit_val_batches=0",
            "test=false",
            f"paths.log_dir={tmp}/outputs",
            "+callbacks.bench_timer._target_=step_timer.StepTimer",
            f"+callbacks.bench_timer.warmup={warmup}",
            f"+callbacks.bench_timer.steps={steps}",
            f"+callbacks.bench_timer.out={out}",
            *extra,
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "FMNIST_TRUSTED_TARGETS": "step_timer.*",
        }  # the CLI builds this callback of ours
        result = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not out.is_file():
            sys.exit(f"error: {' '.join(cmd)} failed:\n{result.stderr[-2000:]}")
        return json.loads(out.read_text())


def measure(arm: str, aug: str, root: str, warmup: int, steps: int, extra: list[str]) -> dict[str, Any]:
    """One cell in a fresh process (the CLI arms start their own; the others run in a child of this script)."""
    if arm in ("batched", "per_sample"):
        return run_cli(root, aug, arm, warmup, steps, extra)
    cmd = [sys.executable, __file__, "--one", arm, aug, "--root", root, "--warmup", str(warmup), "--steps", str(steps)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {arm}/{aug} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarize(samples: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for (arm, aug), runs in samples.items():
        rates = [r["img_per_s"] for r in runs]
        rows.append(
            {
                "arm": arm,
                "aug": aug,
                "median_img_per_s": statistics.median(rates),
                "min_img_per_s": min(rates),
                "max_img_per_s": max(rates),
                "runs": rates,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            }
        )
    return rows


def markdown(report: dict[str, Any]) -> str:
    by = {(r["arm"], r["aug"]): r for r in report["rows"]}

    def cell(arm: str, aug: str) -> str:
        r = by[(arm, aug)]
        return f"{r['median_img_per_s']:,.0f} ({r['min_img_per_s']:,.0f}-{r['max_img_per_s']:,.0f})"

    lines = [
        f"# Training throughput: notebook 000's loop vs the fmnist_lightning CLI (TinyVGG, batch {BATCH}, SGD lr {LR})",
        "",
        f"CPU: {report['cpu']}; torch {report['torch']}, {report['torch_threads']} threads. {report['steps']} timed "
        f"steps after {report['warmup']} warm-up steps per cell, {report['repeats']} interleaved repeats; images/s, "
        f"median (min-max). Command: `{report['command']}`.",
        "",
        "| aug | notebook loop | fmnist CLI, batched | fmnist CLI, per_sample "
        "| batched / notebook (median; range over repeats) | peak RSS MB (max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for aug in report["augs"]:
        nb, bt = by[("notebook", aug)], by[("batched", aug)]
        paired = [b / n for b, n in zip(bt["runs"], nb["runs"], strict=True)]
        rss = max(by[(arm, aug)]["peak_rss_mb"] for arm in ARMS)
        lines.append(
            f"| {aug} | {cell('notebook', aug)} | {cell('batched', aug)} | {cell('per_sample', aug)} | "
            f"{bt['median_img_per_s'] / nb['median_img_per_s']:.2f}x ({min(paired):.2f}-{max(paired):.2f}) | "
            f"{rss:,.0f} |"
        )
    floor = by.get(("floor", "none"))
    if floor:
        batched = by[("batched", "none")]
        lines += [
            "",
            f"Floor (plain loop over in-memory tensors, the framework's TinyVGG and SGD, no augmentation): "
            f"{cell('floor', 'none')} img/s; the CLI with aug=none runs at "
            f"{batched['median_img_per_s'] / floor['median_img_per_s']:.2f}x of it.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6400, help="timed training images per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--augs", nargs="+", default=["none", "light", "randaugment"])
    parser.add_argument(
        "--root", default=None, help="folder containing FashionMNIST/raw/ (default: as training finds it)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--smoke", action="store_true", help="1 repeat of a few steps: checks the script, measures nothing"
    )
    parser.add_argument("--cli-override", action="append", default=[], help="one more override for the CLI arms")
    parser.add_argument("--one", nargs=2, metavar=("ARM", "AUG"), help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from fmnist_lightning.data.idx_files import resolve_data_root

    root = str(resolve_data_root(args.root))
    if args.one:
        arm, aug = args.one
        row = (
            run_floor(root, args.warmup, args.steps)
            if arm == "floor"
            else run_notebook(root, aug, args.warmup, args.steps)
        )
        print(json.dumps(row))
        return
    warmup, steps = (1, 3) if args.smoke else (args.warmup, max(1, args.images // BATCH))
    repeats = 1 if args.smoke else args.repeats
    cells = [(arm, aug) for aug in args.augs for arm in ARMS] + [("floor", "none")]
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(repeats):
        for arm, aug in cells[r % len(cells) :] + cells[: r % len(cells)]:
            samples.setdefault((arm, aug), []).append(measure(arm, aug, root, warmup, steps, args.cli_override))
            print(
                f"repeat {r + 1}: {arm:>10s} {aug:>12s} {samples[(arm, aug)][-1]['img_per_s']:>9,.0f} img/s", flush=True
            )

    import torch

    sys.path.insert(0, str(HERE))
    from results_files import cpu_name, write_results

    report = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "warmup": warmup,
        "steps": steps,
        "repeats": repeats,
        "augs": args.augs,
        "command": "python bench/throughput.py" + (" --smoke" if args.smoke else ""),
        "rows": summarize(samples),
    }
    write_results(args.out, "throughput", report, markdown(report))


if __name__ == "__main__":
    main()
