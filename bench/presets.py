"""A preset's test figures per seed, side by side with the same preset at an earlier commit.

The CPU differs from one session to the next, so a wall time means something only beside another
measured on the same machine in the same sitting. This runs ``experiment=<preset>`` once per seed on
the official test set, and, with ``--baseline <commit>``, the preset as that commit defined it
(code and configs from a ``git worktree`` of the commit, same Python environment), interleaved:
baseline seed 0, new seed 0, baseline seed 1, ... Each run is the real CLI; its figures come from
its ``metrics.json`` (``test/acc``, ``wall_time_s``: train + test) and the process's peak RSS.

Usage: python bench/presets.py --preset speedrun --seeds 0 1 2 3 [--baseline cdef36a [--baseline-seeds 0 1 2]]
       python bench/presets.py --preset best --seeds --baseline 5c26f71 --baseline-seeds 0 --out <folder>
       (the last: the baseline only)
Writes bench/results/presets/<preset>.json and .md, the CPU named in both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
QUIET = ["report=false", "++callbacks.evaluation_figures=null", "trainer.enable_progress_bar=false"]


def run_preset(preset: str, seed: int, checkout: Path, extra: list[str]) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": str(checkout / "src")}  # the checkout's package, not the installed one
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "fmnist_lightning",
            f"experiment={preset}",
            f"seed={seed}",
            *QUIET,
            *extra,
            f"hydra.run.dir={tmp}/run",
        ]
        started = time.perf_counter()
        with open(Path(tmp) / "stderr", "w+") as stderr:
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, cwd=checkout, env=env)
            # wait4: this child's own peak RSS, not the maximum over every run so far.
            _, status, usage = os.wait4(child.pid, 0)
            command_s = time.perf_counter() - started
            if os.waitstatus_to_exitcode(status) != 0:
                stderr.seek(0)
                return {"seed": seed, "error": (stderr.read().strip().splitlines() or ["?"])[-1]}
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
    return {
        "seed": seed,
        "test_acc": metrics["test/acc"],
        "wall_time_s": metrics["wall_time_s"],
        "epochs": metrics.get("epochs"),
        "params": metrics.get("params"),
        "command_s": round(command_s, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in runs if "error" not in r]
    if not done:
        return {}
    accs = [r["test_acc"] for r in done]
    return {
        "mean_acc": statistics.fmean(accs),
        "min_acc": min(accs),
        "mean_wall_s": statistics.fmean(r["wall_time_s"] for r in done),
        "max_rss_mb": max(r["peak_rss_mb"] for r in done),
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# `experiment={report['preset']}` on the test set ({report['cpu']}, 2 cores, {report['date']})",
        "",
        f"`{report['command']}`. One run per seed, interleaved with the baseline where there is one; "
        "wall time is train + test from `metrics.json`.",
        "",
        "| arm | seed | test accuracy | wall time (s) | epochs | parameters | peak RSS (MB) |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for arm in ("baseline", "new"):
        for r in report.get(arm, []):
            if "error" in r:
                lines.append(f"| {report['labels'][arm]} | {r['seed']} | error: {r['error']} | | | | |")
            else:
                lines.append(
                    f"| {report['labels'][arm]} | {r['seed']} | {100 * r['test_acc']:.2f}% | {r['wall_time_s']:.0f} | "
                    f"{r['epochs']} | {r['params']:,} | {r['peak_rss_mb']:,} |"
                )
    lines.append("")
    for arm in ("baseline", "new"):
        s = report.get(f"{arm}_summary")
        if s:
            lines.append(
                f"- {report['labels'][arm]}: mean {100 * s['mean_acc']:.2f}%, lowest {100 * s['min_acc']:.2f}%, "
                f"mean wall time {s['mean_wall_s']:.0f} s, peak RSS at most {s['max_rss_mb']:,} MB."
            )
    if report.get("ratio") is not None:
        lines.append(
            f"- Wall-time ratio, new / baseline, on the seeds both ran ({report['ratio_seeds']}): "
            f"**{report['ratio']:.2f}x**."
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    # Empty: only the baseline runs, e.g. right after a long preset's own seeds, when running both arms
    # again would not fit the sitting.
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--baseline", help="a commit whose own version of the preset runs beside this one")
    parser.add_argument("--baseline-preset", help="the preset's name at that commit (default: --preset)")
    parser.add_argument("--baseline-seeds", type=int, nargs="+", help="default: --seeds")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "presets")
    parser.add_argument("--root", help="folder holding FashionMNIST/raw/ (default: as the CLI finds it from here)")
    parser.add_argument(
        "overrides", nargs="*", help="extra overrides for both arms (e.g. trainer.precision=bf16-mixed)"
    )
    return parser.parse_args()


def new_report(args: argparse.Namespace) -> dict[str, Any]:
    """The report before any run, naming the commit and CPU: wall times compare only within one sitting."""
    from fmnist_lightning.training.provenance import cpu_model

    head = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "preset": args.preset,
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/presets.py " + " ".join(sys.argv[1:]),
        "labels": {"new": f"this checkout ({head})"},
        "new": [],
    }


def run_arms(args: argparse.Namespace, report: dict[str, Any], extra: list[str]) -> None:
    """Both arms seed by seed, interleaved, so that a slow spell of the machine touches both alike."""
    with tempfile.TemporaryDirectory() as tmp:
        baseline_dir = Path(tmp) / "baseline"
        baseline_seeds: list[int] = []
        if args.baseline:
            subprocess.run(
                ["git", "worktree", "add", "--detach", "--quiet", str(baseline_dir), args.baseline],
                cwd=ROOT,
                check=True,
            )
            baseline_seeds = args.baseline_seeds or args.seeds
            report["labels"]["baseline"] = f"{args.baseline_preset or args.preset} at {args.baseline}"
            report["baseline"] = []
        try:
            for seed in sorted(set(args.seeds) | set(baseline_seeds)):
                if seed in baseline_seeds:
                    report["baseline"].append(
                        run_preset(args.baseline_preset or args.preset, seed, baseline_dir, extra)
                    )
                    print("baseline", report["baseline"][-1], flush=True)
                if seed in args.seeds:
                    report["new"].append(run_preset(args.preset, seed, ROOT, extra))
                    print("new", report["new"][-1], flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(baseline_dir)], cwd=ROOT, check=False)


def add_summaries(report: dict[str, Any], baseline: str | None) -> None:
    """Per-arm summaries and, with a baseline, the wall-time ratio over only the seeds both arms completed."""
    for arm in ("baseline", "new"):
        if arm in report:
            report[f"{arm}_summary"] = summary(report[arm])
    if baseline:
        both = {r["seed"]: r for r in report["baseline"] if "error" not in r}
        pairs = [
            (both[r["seed"]]["wall_time_s"], r["wall_time_s"])
            for r in report["new"]
            if "error" not in r and r["seed"] in both
        ]
        if pairs:
            report["ratio"] = sum(n for _, n in pairs) / sum(b for b, _ in pairs)
            report["ratio_seeds"] = ", ".join(str(r["seed"]) for r in report["new"] if r["seed"] in both)


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from fmnist_lightning.data.idx_files import resolve_data_root

    # The baseline's worktree lies in a temporary folder, away from the offline copy beside this checkout.
    data_root = [f"data.root={resolve_data_root(args.root)}"]
    report = new_report(args)
    run_arms(args, report, [*data_root, *args.overrides])
    add_summaries(report, args.baseline)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.preset}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.preset}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
