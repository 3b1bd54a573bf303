"""Training speed of bf16 autocast against float32 on this machine, through the real CLI.

For each backbone, ``python -m fmnist_lightning model=<m> trainer.precision=<p>`` trains ``--images``
images in batches of ``--batch`` (default 256, speedrun's and best_small's batch) after a warm-up, timed by
bench/step_timer.py from the end of the warm-up to the end of the last timed step (data and
augmentation included). Cells are interleaved (the order rotated between repeats) and repeated;
the table shows the median images/s, the min-max, and bf16's speed-up over float32. The CPU's name
and bfloat16 flags are recorded, with what ``trainer.precision=auto`` picks here.

Usage: python bench/precision.py [--repeats 3] [--images 12800] [--batch 256] [--models compact tinyvgg] [--smoke]
Writes bench/results/precision.{json,md}.

``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python bench/precision.py --out bench/results/avx2``
measures what a CPU without bf16 units gets: oneDNN and ATen dispatch only AVX2 kernels, so bf16 is
emulated as on an AVX2-only CPU. The limits in force are recorded beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PRECISIONS = ("32-true", "bf16-mixed")
# Environment variables that cap the instruction set oneDNN and ATen dispatch to (inherited by each cell).
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")


def run_cell(
    model: str, precision: str, root: str, batch: int, warmup: int, steps: int, extra: list[str]
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timing.json"
        cmd = [
            sys.executable,
            "-m",
            "fmnist_lightning",
            f"model={model}",
            f"trainer.precision={precision}",
            "aug=shift_flip",
            "optim=sgd",
            "optim.momentum=0.9",
            "sched=none",
            f"data.batch_size={batch}",
            f"data.root={root}",
            "data.download=false",
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={warmup + steps}",
            "trainer.limit_val_batches=0",
            "test=false",
            "report=false",
            "trainer.enable_progress_bar=false",
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


def markdown(report: dict[str, Any]) -> str:
    limits = " ".join(f"{k}={v}" for k, v in report["isa_limits"].items())
    lines = [
        "# bf16 autocast against float32, through the CLI",
        "",
        f"CPU: {report['cpu']} (bfloat16 flags: {', '.join(report['bf16_flags']) or 'none'}; "
        f"`trainer.precision=auto` picks {report['auto']}). torch {report['torch']}. "
        f"Command: `{(limits + ' ') if limits else ''}{report['command']}`.",
        *(
            [
                f"Kernels limited by {limits}: the CPU's bf16 units are not used, so this measures an AVX2-only CPU's "
                "emulated bf16 (`auto` reads the CPU flags and would still pick bf16-mixed here)."
            ]
            if limits
            else []
        ),
        f"Batch {report['batch']}, {report['steps']} timed steps after {report['warmup']} warm-up steps, "
        f"{report['repeats']} interleaved repeats: median images/s (min-max).",
        "",
        "| model | 32-true | bf16-mixed | bf16 / fp32 |",
        "|---|---:|---:|---:|",
    ]
    for model, row in report["models"].items():
        cells = [f"{row[p]['median']:,.0f} ({min(row[p]['runs']):,.0f}-{max(row[p]['runs']):,.0f})" for p in PRECISIONS]
        lines.append(f"| {model} | {cells[0]} | {cells[1]} | {row['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=12800, help="timed training images per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["compact", "tinyvgg"])
    parser.add_argument(
        "--root", default=None, help="folder containing FashionMNIST/raw/ (default: as training finds it)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--smoke", action="store_true", help="1 repeat of a few steps: checks the script, measures nothing"
    )
    parser.add_argument("--cli-override", action="append", default=[], help="one more override for every cell")
    args = parser.parse_args()

    import torch

    from fmnist_lightning.data.idx_files import resolve_data_root
    from fmnist_lightning.training.precision import BF16_CPU_FLAGS, cpu_flags, fast_precision

    sys.path.insert(0, str(HERE))
    from results_files import cpu_name, write_results

    root = str(resolve_data_root(args.root))
    warmup, steps = (1, 2) if args.smoke else (10, max(1, args.images // args.batch))
    repeats = 1 if args.smoke else args.repeats
    cells = [(m, p) for m in args.models for p in PRECISIONS]
    runs: dict[tuple[str, str], list[float]] = {}
    for r in range(repeats):
        for model, precision in cells[r % len(cells) :] + cells[: r % len(cells)]:
            speed = run_cell(model, precision, root, args.batch, warmup, steps, args.cli_override)["img_per_s"]
            runs.setdefault((model, precision), []).append(speed)
            print(f"repeat {r + 1}: {model:>10s} {precision:>10s} {speed:>9,.0f} img/s", flush=True)

    models = {}
    for model in args.models:
        row = {p: {"median": statistics.median(runs[(model, p)]), "runs": runs[(model, p)]} for p in PRECISIONS}
        row["speedup"] = row["bf16-mixed"]["median"] / row["32-true"]["median"]
        models[model] = row
    report = {
        "cpu": cpu_name(),
        "bf16_flags": sorted(BF16_CPU_FLAGS & cpu_flags()),
        "auto": fast_precision("cpu"),
        "torch": torch.__version__,
        "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if k in os.environ},
        "batch": args.batch,
        "warmup": warmup,
        "steps": steps,
        "repeats": repeats,
        "command": " ".join(["python bench/precision.py", *sys.argv[1:]]),
        "models": models,
    }
    write_results(args.out, "precision", report, markdown(report))


if __name__ == "__main__":
    main()
