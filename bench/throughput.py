"""Training throughput: the notebooks' data path vs fmnist_lightning's, side by side on this machine.

For TinyVGG and each augmentation, one timed pass over the same number of training
images in four ways, each in its own subprocess so peak memory is its own:

1. notebook:   torchvision FashionMNIST + per-sample PIL transforms + DataLoader(64, shuffle) + a plain loop
2. per_sample: fmnist_lightning, real Trainer, data.pipeline=per_sample
3. batched:    fmnist_lightning, real Trainer, data.pipeline=batched
4. floor:      a plain PyTorch loop over in-memory tensors, no augmentation (shows Lightning's own overhead)

Usage: python bench/throughput.py [--images 12800] [--augs none light randaugment] [--smoke]
Writes bench/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("notebook", "per_sample", "batched", "floor")
BATCH = 64
WARMUP_BATCHES = 10


def _peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + workers) / 1024


def _notebook_transform(aug: str):  # noqa: ANN202
    from torchvision import transforms as T

    ops = {"none": [], "light": [T.RandomRotation(10), T.RandomHorizontalFlip()], "randaugment": [T.RandAugment()]}
    return T.Compose([*ops[aug], T.ToTensor(), T.Normalize((0.5,), (0.5,))])


def _timed_loop(model, batches, n_batches: int) -> float:  # noqa: ANN001
    """The notebooks' loop: forward, loss, backward, step, and a loss.item() per step. Returns img/s."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    seen, running, start = 0, 0.0, 0.0
    for i, (x, y) in enumerate(batches):
        if i == WARMUP_BATCHES:
            start, seen = time.perf_counter(), 0
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item()
        seen += len(y)
        if i + 1 >= n_batches + WARMUP_BATCHES:
            break
    return seen / (time.perf_counter() - start)


def run_notebook(root: str, aug: str, n_batches: int) -> float:
    from torch.utils.data import DataLoader
    from torchvision.datasets import FashionMNIST

    from fmnist_lightning.models import create_model

    data = FashionMNIST(root, train=True, download=False, transform=_notebook_transform(aug))
    loader = DataLoader(data, batch_size=BATCH, shuffle=True)
    return _timed_loop(create_model("tinyvgg"), loader, n_batches)


def run_floor(root: str, n_batches: int) -> float:
    import torch

    from fmnist_lightning.data import NORMALIZATION, load_split, normalize
    from fmnist_lightning.models import create_model

    images, labels = load_split(Path(root), "train")
    mean, std = NORMALIZATION["half"]

    def batches():  # noqa: ANN202
        while True:
            for idx in torch.randperm(len(labels)).split(BATCH):
                yield normalize(images[idx], mean, std), labels[idx]

    return _timed_loop(create_model("tinyvgg", channels_last=True), batches(), n_batches)


def run_fmnist(root: str, aug: str, pipeline: str, n_batches: int) -> float:
    import lightning as L
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fmnist_lightning.config import CONF_DIR

    class Timer(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ANN001
            if batch_idx == WARMUP_BATCHES:
                self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):  # noqa: ANN001
            self.elapsed = time.perf_counter() - self.start

    overrides = [
        f"aug={aug}", f"data.pipeline={pipeline}", f"data.root={root}", "data.download=false",
        "data.normalize=half", "data.val_size=0", f"data.batch_size={BATCH}", "model=tinyvgg", "optim=sgd", "optim.lr=0.01",
        "optim.momentum=0.9", "sched=none",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.module, net=instantiate(cfg.model))
    timer = Timer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=n_batches + WARMUP_BATCHES,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, datamodule=datamodule)
    return n_batches * BATCH / timer.elapsed


def measure_one(variant: str, aug: str, root: str, n_batches: int) -> dict:
    if variant == "notebook":
        rate = run_notebook(root, aug, n_batches)
    elif variant == "floor":
        rate = run_floor(root, n_batches)
    else:
        rate = run_fmnist(root, aug, variant, n_batches)
    return {"variant": variant, "aug": aug, "img_per_s": round(rate, 1), "peak_rss_mb": round(_peak_rss_mb(), 1)}


def markdown(rows: list[dict], meta: dict) -> str:
    by = {(r["variant"], r["aug"]): r for r in rows}
    floor = by.get(("floor", "none"), {}).get("img_per_s")
    lines = [
        f"# Training throughput (TinyVGG, batch {BATCH}, {meta['images']} timed images per cell)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        "",
        "| aug | notebook loop | fmnist per_sample | fmnist batched | batched / notebook | peak RSS (MB, max of row) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for aug in meta["augs"]:
        cells = [by.get((v, aug)) for v in ("notebook", "per_sample", "batched")]
        rates = [c["img_per_s"] if c else None for c in cells]
        ratio = f"{rates[2] / rates[0]:.2f}x" if rates[0] and rates[2] else "-"
        rss = max(c["peak_rss_mb"] for c in cells if c)
        lines.append(f"| {aug} | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[2]:,.0f} | {ratio} | {rss:,.0f} |")
    if floor:
        batched_none = by.get(("batched", "none"), {}).get("img_per_s")
        lines += [
            "",
            f"Floor (plain PyTorch loop over in-memory tensors, no augmentation): {floor:,.0f} img/s; "
            f"fmnist_lightning batched with aug=none reaches {batched_none / floor:.2f}x of it "
            f"(peak RSS {by[('floor', 'none')]['peak_rss_mb']:,.0f} MB).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12800, help="timed training images per measurement")
    parser.add_argument("--augs", nargs="+", default=["none", "light", "randaugment"])
    parser.add_argument("--root", default=None, help="data.root (default: the project's resolution)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--smoke", action="store_true", help="a few batches per cell: checks the script runs")
    parser.add_argument("--one", nargs=2, metavar=("VARIANT", "AUG"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from fmnist_lightning.data import resolve_data_root

    global WARMUP_BATCHES
    root = str(resolve_data_root(args.root))
    n_batches = 3 if args.smoke else max(1, args.images // BATCH)
    if args.smoke:
        WARMUP_BATCHES = 1  # the tests' tiny dataset has only a few batches
    if args.one:
        print(json.dumps(measure_one(*args.one, root, n_batches)))
        return

    rows = []
    cells = [(v, a) for a in args.augs for v in VARIANTS if v != "floor"] + [("floor", "none")]
    for variant, aug in cells:
        cmd = [sys.executable, __file__, "--one", variant, aug, "--root", root, "--images", str(args.images)]
        cmd += ["--smoke"] if args.smoke else []
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            sys.exit(f"{variant}/{aug} failed:\n{result.stderr[-2000:]}")
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{variant:>10s} {aug:>12s} {row['img_per_s']:>9,.0f} img/s  peak {row['peak_rss_mb']:,.0f} MB", flush=True)
        rows.append(row)

    import platform

    import torch

    meta = {
        "images": n_batches * BATCH,
        "augs": args.augs,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "command": "python bench/throughput.py" + (" --smoke" if args.smoke else ""),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "throughput.md").write_text(markdown(rows, meta))
    print(f"wrote {args.out / 'throughput.md'}")


if __name__ == "__main__":
    main()
