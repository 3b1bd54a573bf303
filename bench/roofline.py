"""How close each preset's training runs to this CPU's own peak, and where its step time goes.

1. Peak (``bench/cpu_peak.py``): GFLOP/s of fp32 and bf16 matmul (square, 1024 and 2048) and conv2d
   at the shapes the presets' networks use (recorded from one forward pass of each), on 2 threads as
   training runs. The peak for a precision is the best of these.
2. Each preset trains as ``python -m fmnist_lightning experiment=<preset>`` would (the real CLI, its
   precision resolved for this CPU), with one callback added (``StepProbe``, below) that times
   ``--steps`` training steps after ``--warmup``, then profiles the next ``--steps`` with
   ``torch.profiler``, and stops. Achieved GFLOP/s = forward FLOPs per image x 3 (forward and
   backward) x images / seconds of the timed (unprofiled) steps.
3. The profiled steps' time, split by where each operator ran (its nearest labelled caller): the
   network's forward (``training_step``: convolutions, matmuls, the rest: BatchNorm, activations,
   pooling, the loss) and backward (``backward``), the optimizer's step (torch's own
   ``Optimizer.step#...`` label: Muon's orthogonalisation included), the batched augmentation
   (``on_after_batch_transfer``), and everything else: fetching the batch from memory, callbacks
   such as EMA, Lightning's loop. Python and framework overhead is the steps' wall time that no
   operator accounts for.

Usage: python bench/roofline.py [--presets speedrun speedrun94 best_small best] [--warmup 10] [--steps 30]
Writes bench/results/roofline.{json,md}, the CPU named in both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PRESETS = ("speedrun", "speedrun94", "best_small", "best")
# Where an operator's time goes: the nearest of these labels among its callers.
LABELS = {"forward": "training_step", "backward": "backward", "augmentation": "on_after_batch_transfer"}
NETWORK = ("conv", "matmul", "other layers")
PARTS = (
    *(f"{p} {n}" for p in ("forward", "backward") for n in NETWORK),
    "optimizer",
    "augmentation",
    "data, callbacks, loop",
    "python overhead",
)


def labelled(target: Any, hook: str, label: str) -> None:
    """Wrap ``target.<hook>`` in a profiler label (Lightning looks hooks up on the instance)."""
    original = getattr(target, hook)

    def call(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(label):
            return original(*args, **kwargs)

    setattr(target, hook, call)


class StepProbe(Callback):
    """Times ``steps`` training steps after ``warmup``, profiles the next ``steps``, writes ``out`` and stops."""

    def __init__(self, out: str, warmup: int = 10, steps: int = 30) -> None:
        self.out, self.warmup, self.steps = Path(out), warmup, steps
        self.marks: dict[str, float] = {}
        self.profile: Any = None
        self.batch_size = self.seen = 0

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        labelled(pl_module, "training_step", "forward")
        labelled(pl_module, "backward", "backward")
        labelled(trainer.datamodule, "on_after_batch_transfer", "augmentation")

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Steps counted across epochs: a small dataset's epoch may end inside the window.
        self.batch_size, self.seen, now = len(batch[0]), self.seen + 1, time.perf_counter()
        if self.seen == self.warmup:
            self.marks["timed"] = now
        elif self.seen == self.warmup + self.steps:
            self.marks["timed"] = now - self.marks["timed"]
            self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.profile.__enter__()
            self.marks["profiled"] = time.perf_counter()
        elif self.seen == self.warmup + 2 * self.steps:
            self.marks["profiled"] = now - self.marks["profiled"]
            self.profile.__exit__(None, None, None)
            self.write(trainer, pl_module)
            trainer.should_stop = True

    def write(self, trainer: Any, pl_module: Any) -> None:
        from fmnist_lightning.training.builders import model_info

        info = model_info(pl_module)
        images = self.steps * self.batch_size
        result = {
            **info,
            "precision": str(trainer.precision),
            "batch_size": self.batch_size,
            "steps": self.steps,
            "step_s": self.marks["timed"] / self.steps,
            "images_per_s": images / self.marks["timed"],
            "achieved_gflops": 3 * info["flops_per_image"] * images / self.marks["timed"] / 1e9,
            "profiled_s": self.marks["profiled"],
            "breakdown_s": breakdown(self.profile.events(), self.marks["profiled"]),
            "conv_shapes": conv_shapes(pl_module),
        }
        self.out.write_text(json.dumps(result, indent=2) + "\n")


def part_of(event: Any) -> str:
    """Which part of the step an operator's own time belongs to."""
    caller = event.cpu_parent
    while caller is not None and caller.name not in LABELS and not caller.name.startswith("Optimizer."):
        caller = caller.cpu_parent
    if caller is None:
        return "data, callbacks, loop"
    if caller.name.startswith("Optimizer."):
        return "optimizer"
    if caller.name == "augmentation":
        return "augmentation"
    name = event.name.lower()
    kind = "conv" if "conv" in name else "matmul" if any(k in name for k in ("mm", "matmul", "linear")) else None
    return f"{caller.name} {kind or 'other layers'}"


def breakdown(events: Any, wall_s: float) -> dict[str, float]:
    """Seconds per part of the profiled steps; what no operator accounts for is Python and framework overhead."""
    seconds: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name in LABELS or event.name.startswith("Optimizer.") or event.name.startswith("[pl]"):
            continue  # a label's own time is its caller's Python, counted below
        seconds[part_of(event)] += event.self_cpu_time_total / 1e6
    seconds["python overhead"] = max(0.0, wall_s - sum(seconds.values()))
    return {part: round(seconds.get(part, 0.0), 4) for part in PARTS}


def conv_shapes(pl_module: Any) -> list[list[Any]]:
    """(batch, in channels, height, width, out channels, kernel, stride, padding, groups) of every conv2d."""
    shapes: list[list[Any]] = []
    hooks = [
        m.register_forward_hook(
            lambda m, args, _: shapes.append(
                [*args[0].shape, m.out_channels, m.kernel_size[0], m.stride[0], pad(m.padding), m.groups]
            )
        )
        for m in pl_module.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    with torch.no_grad():
        pl_module(torch.zeros(256, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    return shapes


def pad(padding: Any) -> Any:
    return padding if isinstance(padding, str) else padding[0]


def run_preset(preset: str, args: argparse.Namespace) -> dict[str, Any]:
    """``experiment=<preset>`` through the real CLI with the probe added; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        cmd = [
            sys.executable,
            "-m",
            "fmnist_lightning",
            f"experiment={preset}",
            f"data.root={args.root}",
            "+callbacks.step_probe._target_=roofline.StepProbe",
            f"+callbacks.step_probe.out={out}",
            f"+callbacks.step_probe.warmup={args.warmup}",
            f"+callbacks.step_probe.steps={args.steps}",
            "test=false",
            "report=false",
            "++callbacks.evaluation_figures=null",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp}/run",
            *args.overrides,
        ]
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            "FMNIST_TRUSTED_TARGETS": "roofline.*",  # the probe is the bench's code, not a config's (hydra_compat)
        }
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"error: {preset}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        return {"preset": preset, **json.loads(out.read_text())}


def percent(row: dict[str, Any], *parts: str) -> float:
    return 100 * sum(row["breakdown_s"][p] for p in parts) / row["profiled_s"]


def markdown(report: dict[str, Any]) -> str:
    peaks = report["peak"]
    lines = [
        f"# Roofline: each preset's training against this CPU's peak ({report['cpu']}, 2 threads)",
        "",
        f"`{report['command']}` ({report['date']}). Peak GFLOP/s measured here, at 2 threads:",
        "",
        "| dtype | " + " | ".join(peaks["fp32"]["rows"]) + " | peak |",
        "|---|" + "---|" * (len(peaks["fp32"]["rows"]) + 1),
    ]
    for dtype, entry in peaks.items():
        if entry["peak"] is None:
            lines.append(f"| {dtype} | not measured: {entry['note']} |")
            continue
        values = " | ".join(f"{v:,.1f}" for v in entry["rows"].values())
        lines.append(f"| {dtype} | {values} | {entry['peak']:,.1f} |")
    lines += [
        "",
        f"Each preset: {report['steps']} training steps timed after {report['warmup']} warm-up steps, then "
        f"{report['steps']} more profiled (`torch.profiler`). Achieved = forward FLOPs per image x 3 x images / "
        "seconds; % of peak against the peak of the precision the run resolved to. The breakdown is % of the "
        "profiled steps' wall time.",
        "",
        "| preset | precision | params | MFLOPs/image | batch | ms/step | images/s | achieved GFLOP/s | % of peak | "
        "network fwd+bwd | conv | matmul | other layers | optimizer | augmentation | data, callbacks, loop | "
        "python overhead | outside the network |",
        "|---|" + "---|" * 17,
    ]
    for row in report["presets"]:
        dtype = "bf16" if "bf16" in row["precision"] else "fp32"
        network = [f"{p} {n}" for p in ("forward", "backward") for n in NETWORK]
        outside = ("optimizer", "augmentation", "data, callbacks, loop", "python overhead")
        cells = [
            row["preset"],
            row["precision"],
            f"{row['params']:,}",
            f"{row['flops_per_image'] / 1e6:.1f}",
            str(row["batch_size"]),
            f"{1000 * row['step_s']:.0f}",
            f"{row['images_per_s']:,.0f}",
            f"{row['achieved_gflops']:.1f}",
            f"{100 * row['achieved_gflops'] / peaks[dtype]['peak']:.0f}%",
            f"{percent(row, *network):.0f}%",
            *(f"{percent(row, f'forward {n}', f'backward {n}'):.0f}%" for n in NETWORK),
            *(f"{percent(row, p):.0f}%" for p in outside),
            f"{percent(row, *outside):.0f}%",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    # 10 is enough: best's step measured 165 and 171 ms after 10 warm-up steps, 173 and 157 after 50, interleaved
    # (AMD EPYC Zen 4, 2026-12-07, docs/benchmarks.md); what differs between sittings is the machine, not warm-up.
    parser.add_argument("--warmup", type=int, default=10, help="steps before the timed ones")
    parser.add_argument("--steps", type=int, default=30, help="steps timed, and as many profiled")
    parser.add_argument("--root", help="the dataset (default: ../shared/data beside the checkout)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where roofline.json and .md go")
    parser.add_argument("--quick", action="store_true", help="peak timings of a few calls (a smoke test's)")
    parser.add_argument("overrides", nargs="*", help="training overrides added to every preset's run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(HERE.parent / "src"))
    from fmnist_lightning.data.idx_files import resolve_data_root
    from fmnist_lightning.training.provenance import cpu_model

    args.root = str(resolve_data_root(args.root))
    from cpu_peak import TIMING, peak  # beside this file

    if args.quick:
        TIMING.update(min_s=0.01, rounds=1)
    rows = []
    for preset in args.presets:  # one at a time: two trainings at once would slow both
        rows.append(run_preset(preset, args))
        print(
            f"{preset}: {rows[-1]['achieved_gflops']:.1f} GFLOP/s, {1000 * rows[-1]['step_s']:.0f} ms/step", flush=True
        )
    report = {
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/roofline.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "warmup": args.warmup,
        "steps": args.steps,
        "peak": peak([shape for row in rows for shape in row["conv_shapes"]]),
        "presets": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "roofline.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "roofline.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
