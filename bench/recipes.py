"""What each speedrun trick buys on this machine: today's ``speedrun`` and the same with one knob added per row.

Every row is the real CLI, ``experiment=speedrun`` plus the row's overrides, tuned on the validation
split only: ``data.val_size=5000`` (speedrun itself trains on all 60,000) and ``test=false``, so
no row ever sees the test set. Each row reports its best validation accuracy, the wall time to 93%
validation accuracy (``time_to_acc/0.93`` of ``metrics.json``; also to 92%, which a speedrun-length run
reaches on validation, without test-time augmentation; "not reached" when it never did) and the
train wall time, per seed. Rows are interleaved (every row for seed 0, then every row for seed 1, ...).

Usage: python bench/recipes.py [--seeds 0] [--rows base whiten ...] [--epochs 10] [--out bench/results/recipes]
Writes <out>/recipes.json and recipes.md, the CPU named in both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VALIDATION = ["data.val_size=5000", "test=false", "report=false", "++callbacks.evaluation_figures=null",
              "trainer.enable_progress_bar=false"]
# Each row: today's speedrun plus one knob (docs/configuration.md#speedrun-knobs).
ROWS: dict[str, list[str]] = {
    "base": [],
    "param_groups": ["module.param_groups.norm_bias_weight_decay=0.0", "module.param_groups.norm_bias_lr_scale=4.0"],
    "whiten": ["init=whiten"],
    "whiten_dirac": ["init=whiten_dirac"],
    "alt_flip": ["aug=shift_alt_flip"],
    "muon": ["optim=muon"],
    # Muon with its own settings instead of speedrun's SGD lr, momentum and weight decay.
    "muon_own": ["optim=muon", "optim.lr=0.02", "optim.momentum=0.95", "optim.weight_decay=0.0"],
    "whiten_muon": ["init=whiten", "optim=muon"],
    "lookahead": ["optim=lookahead", "optim.lr=0.2"],
    "ema_bn": ["ema=default", "callbacks.ema.decay=0.99", "model.bn_momentum=0.4"],
    "compile": ["model.compile=true"],
}


def run_row(overrides: list[str], seed: int, epochs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fmnist_lightning", "experiment=speedrun", f"seed={seed}",
               f"trainer.max_epochs={epochs}", *VALIDATION, *overrides, f"hydra.run.dir={tmp}/run"]
        started = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            return {"error": (result.stderr.strip().splitlines() or ["?"])[-1], "command_s": wall}
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {"val_acc_best": metrics.get("val/acc_best"), "time_to_92_s": metrics.get("time_to_acc/0.92"),
            "time_to_93_s": metrics.get("time_to_acc/0.93"),
            "wall_time_s": metrics.get("wall_time_s"), "command_s": wall}


def cell(values: list[float | None], fmt: str) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "not reached" if values else ""
    text = ", ".join(fmt.format(v) for v in present)
    missing = len(values) - len(present)
    return text + (f" ({missing} not reached)" if missing else "")


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Speedrun knobs, one per row, on the validation split ({report['cpu']}, 2 cores)", "",
             f"`{report['command']}`; each row is `experiment=speedrun` plus its overrides, "
             f"`{' '.join(VALIDATION[:2])}`, {report['epochs']} epochs, seeds {report['seeds']}, "
             "interleaved. No row is tested.", "",
             "| row | overrides | val/acc_best per seed | mean | time to 92% val (s) | time to 93% val (s) | "
             "train wall time (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, runs in report["rows"].items():
        if all("error" in r for r in runs):
            lines.append(f"| {name} | `{' '.join(ROWS[name])}` | error: {runs[0].get('error', '')} | | | | |")
            continue
        runs = [r for r in runs if "error" not in r]
        accs = [r["val_acc_best"] for r in runs]
        lines.append(f"| {name} | `{' '.join(ROWS[name]) or '(speedrun as it is)'}` | "
                     f"{cell([100 * a for a in accs], '{:.2f}%')} | {100 * statistics.fmean(accs):.2f}% | "
                     f"{cell([r['time_to_92_s'] for r in runs], '{:.0f}')} | "
                     f"{cell([r['time_to_93_s'] for r in runs], '{:.0f}')} | "
                     f"{cell([r['wall_time_s'] for r in runs], '{:.0f}')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recipes")
    parser.add_argument("--replace", action="store_true",
                        help="rerun the given rows and seeds into the existing <out>/recipes.json (a failed cell)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from fmnist_lightning.training.provenance import cpu_model

    if args.replace:
        report = json.loads((args.out / "recipes.json").read_text())
        if report["cpu"] != cpu_model():
            sys.exit(f"error: {args.out}/recipes.json was measured on {report['cpu']}, this is {cpu_model()}")
        for seed in args.seeds:
            for name in args.rows:
                runs = report["rows"][name]
                runs[:] = [r for r in runs if r["seed"] != seed] + [run_row(ROWS[name], seed, report["epochs"]) | {"seed": seed}]
                runs.sort(key=lambda r: r["seed"])
                print(name, seed, runs, flush=True)
        report["reruns"] = report.get("reruns", []) + ["python bench/recipes.py " + " ".join(sys.argv[1:])]
    else:
        rows: dict[str, list[dict[str, Any]]] = {name: [] for name in args.rows}
        for seed in args.seeds:
            for name in args.rows:
                rows[name].append(run_row(ROWS[name], seed, args.epochs) | {"seed": seed})
                print(name, seed, rows[name][-1], flush=True)
        report = {"cpu": cpu_model(), "date": time.strftime("%Y-%m-%d"), "epochs": args.epochs, "seeds": args.seeds,
                  "command": "python bench/recipes.py " + " ".join(sys.argv[1:]), "rows": rows,
                  "overrides": {name: ROWS[name] for name in args.rows}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recipes.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "recipes.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
