"""What pruning saves: ``hparams_search=lr_wd`` with and without the median pruner, same trials, epochs and seed.

Each arm is the real CLI as a user runs it (one process per search, basic launcher), timed
from start to exit; the best ``val/acc_best`` and the trial states are read back from the
study's sqlite storage.

Usage: python bench/pruning.py [--trials 20] [--epochs 8] [extra overrides ...]
Writes bench/results/pruning.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = {"median pruner (preset default)": [], "no pruning": ["hydra/sweeper/pruner=none"]}


def run_arm(extra: list[str], common: list[str], log_dir: Path) -> dict:
    import optuna

    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning",
        "hparams_search=lr_wd",
        f"paths.log_dir={log_dir}",
        *common,
        *extra,
    ]
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed: {result.stderr.strip().splitlines()[-1:]}")
    (sweep,) = (log_dir / "multirun").iterdir()
    study = optuna.load_study(study_name="lr_wd", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = Counter(t.state.name.lower() for t in study.trials)
    # The best val/acc_best any trial reached, pruned ones included (their last report is their best so far).
    reached = [max(t.intermediate_values.values()) for t in study.trials if t.intermediate_values]
    return {
        "command": " ".join(["python -m fmnist_lightning", *cmd[3:4], *common, *extra]),
        "wall_time_s": wall,
        "trials": dict(states),
        "best_val_acc_best": max(reached),
        "best_params": study.best_trial.params,
        "epochs_trained": sum(len(t.intermediate_values) for t in study.trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20, help="the preset's own n_trials")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="more overrides for both arms")
    args = parser.parse_args()
    common = [
        f"hydra.sweeper.n_trials={args.trials}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        *args.overrides,
    ]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_files import cpu_name, write_results

    arms = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(ARMS.items()):
            arms[name] = run_arm(extra, common, Path(tmp) / str(i))
            print(name, json.dumps(arms[name]), flush=True)
    pruned, full = arms["median pruner (preset default)"], arms["no pruning"]
    report = {
        "cpu": cpu_name(),
        "trials": args.trials,
        "epochs": args.epochs,
        "arms": arms,
        "wall_time_ratio": pruned["wall_time_s"] / full["wall_time_s"],
        "best_difference_points": 100 * (pruned["best_val_acc_best"] - full["best_val_acc_best"]),
    }
    lines = [
        f"# Pruning: hparams_search=lr_wd, {args.trials} trials x {args.epochs} epochs, same seed",
        "",
        f"CPU: {report['cpu']}. Command: `python bench/pruning.py --trials {args.trials} --epochs {args.epochs}`.",
        "",
        "| arm | wall time | trials (state: count) | epochs trained | best val/acc_best |",
        "|---|---:|---|---:|---:|",
    ]
    for name, arm in arms.items():
        states = ", ".join(f"{k}: {v}" for k, v in sorted(arm["trials"].items()))
        lines.append(
            f"| {name} | {arm['wall_time_s']:.0f} s | {states} | {arm['epochs_trained']} | "
            f"{arm['best_val_acc_best']:.4f} |"
        )
    lines += [
        "",
        f"Pruned / unpruned wall time: {report['wall_time_ratio']:.2f}x; best val/acc_best differs by "
        f"{report['best_difference_points']:+.2f} points.",
    ]
    write_results(args.out, "pruning", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
