"""What each speedrun trick buys on this machine: ``speedrun`` as of 2026-12-01 and the same with one knob per row.

Every row is the real CLI, ``experiment=speedrun`` as it was on 2026-12-01
(``bench/conf/experiment/speedrun_2026_12_01.yaml``) plus the row's overrides, tuned on the validation
split only: ``data.val_size=5000`` (speedrun itself trains on all 60,000) and ``test=false``, so
no row ever sees the test set. Each row reports its best validation accuracy, the wall time to 93%
validation accuracy (``time_to_acc/0.93`` of ``metrics.json``; also to 92%, which a speedrun-length run
reaches on validation, without test-time augmentation; "not reached" when it never did) and the
train wall time, per seed. Rows are interleaved (every row for seed 0, then every row for seed 1, ...).

Usage: python bench/recipes.py [--seeds 0] [--rows base whiten ...] [--epochs 10] [--out bench/results/recipes]
Writes <out>/recipes.json and recipes.md, the CPU named in both.

``--reuse <recipes.json> ...`` takes the cells an earlier report of this CPU measured with the same settings: each
cell records a digest of the config it composed to, so a row matches whatever its overrides' text, and an option
whose meaning has changed since does not match by its name. Cells measured before digests were recorded match by
their overrides' text. The plan (which cells are reused, which run, and why a cell of the same row name is not
reused) is printed before the first run; ``--plan`` prints only that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# bench/ is not a package: its rows sit beside this file. Off the path again after, as tests load this file.
sys.path.insert(0, str(HERE))
try:
    from recipe_reuse import (
        composed_settings,  # noqa: F401 -- for tests/config_snapshots.py, which loads only this file
        missed,
        reused,
        settings_digest,
    )
    from recipe_rows import ALL_ROWS, BASE, CUMULATIVE, PILOTS, ROWS, VALIDATION, row_overrides
finally:
    sys.path.remove(str(HERE))


def run_row(overrides: list[str], seed: int, epochs: int, keep: Path | None = None) -> dict[str, Any]:
    """One cell; ``keep``: where its last checkpoint is copied to (a network that never saw the
    validation images, so it may teach a later distillation pilot)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "fmnist_lightning",
            *BASE,
            f"seed={seed}",
            *row_overrides(overrides, epochs),
            *VALIDATION,
            f"hydra.run.dir={tmp}/run",
        ]
        started = time.perf_counter()
        with open(Path(tmp) / "stderr", "w+") as stderr:
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT)
            # wait4 gives this child's own peak RSS (RUSAGE_CHILDREN would be the max over all rows).
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - started
            if os.waitstatus_to_exitcode(status) != 0:
                stderr.seek(0)
                return {"error": (stderr.read().strip().splitlines() or ["?"])[-1], "command_s": wall}
        metrics = json.loads((Path(tmp) / "run" / "metrics.json").read_text())
        # What test-time augmentation would add, measured on the same validation images (never on test).
        last = Path(tmp) / "run" / "checkpoints" / "last.ckpt"
        if keep is not None and last.is_file():
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(last, keep)
        tta = {
            name: evaluate_val(last if last.is_file() else Path(metrics["best_model_path"]), views, Path(tmp) / name)
            for name, views in TTA_VIEWS.items()
        }
    return {
        "val_acc_best": metrics.get("val/acc_best"),
        "time_to_92_s": metrics.get("time_to_acc/0.92"),
        "time_to_93_s": metrics.get("time_to_acc/0.93"),
        "wall_time_s": metrics.get("wall_time_s"),
        "command_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        **tta,
    }


TTA_VIEWS = {"val_acc_mirror": ["tta=true", "tta_shift=0"], "val_acc_mirror_shift1": ["tta=true", "tta_shift=1"]}


def evaluate_val(ckpt: Path, views: list[str], out: Path) -> float | None:
    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning.evaluate",
        f"ckpt_path={ckpt}",
        "split=val",
        *views,
        f"hydra.run.dir={out}",
    ]
    if subprocess.run(cmd, capture_output=True, cwd=ROOT).returncode != 0:
        return None
    return json.loads((out / "metrics.json").read_text())["val/acc"]


def cell(values: list[float | None], fmt: str) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "not reached" if values else ""
    text = ", ".join(fmt.format(v) for v in present)
    missing = len(values) - len(present)
    return text + (f" ({missing} not reached)" if missing else "")


def measured(runs: list[dict[str, Any]], key: str, fmt: str) -> str:
    """A column the older rows did not record."""
    if not any(r.get(key) is not None for r in runs):
        return "not measured"
    return ", ".join(fmt.format(r[key]) if r.get(key) is not None else "-" for r in runs)


def markdown(report: dict[str, Any]) -> str:
    if set(report["rows"]) <= set(CUMULATIVE):
        kind = "From today's speedrun to the new one, one knob added per row and kept below it,"
    elif set(report["rows"]) & set(PILOTS):
        kind = "Tuning pilots"
    else:
        kind = "Speedrun knobs, one per row,"
    lines = [
        f"# {kind} on the validation split ({report['cpu']}, 2 cores)",
        "",
        f"`{report['command']}`; each row is `speedrun` as of 2026-12-01 plus its overrides, "
        f"`{' '.join(VALIDATION[:2])}`, {report['epochs']} epochs unless the row sets `trainer.max_epochs`, "
        f"seeds {report['seeds']}, interleaved. No row is tested. Validation accuracy with test-time "
        "augmentation: `python -m fmnist_lightning.evaluate split=val` on the last checkpoint.",
        "",
        *(
            [f"Cells added or rerun later: {'; '.join(f'`{c}`' for c in report['reruns'])}.", ""]
            if report.get("reruns")
            else []
        ),
        "| row | overrides | val/acc_best per seed | mean | time to 92% val (s) | time to 93% val (s) | "
        "train wall time (s) | peak RSS (MB) | val, mirror TTA | val, mirror + 1 px shifts TTA |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in report["rows"].items():
        if all("error" in r for r in runs):
            lines.append(f"| {name} | `{' '.join(ALL_ROWS[name])}` | error: {runs[0].get('error', '')} | | | | | | | |")
            continue
        runs = [r for r in runs if "error" not in r]
        accs = [r["val_acc_best"] for r in runs]
        lines.append(
            f"| {name} | `{' '.join(ALL_ROWS[name]) or '(speedrun as of 2026-12-01)'}` | "
            f"{cell([100 * a for a in accs], '{:.2f}%')} | {100 * statistics.fmean(accs):.2f}% | "
            f"{cell([r['time_to_92_s'] for r in runs], '{:.0f}')} | "
            f"{cell([r['time_to_93_s'] for r in runs], '{:.0f}')} | "
            f"{cell([r['wall_time_s'] for r in runs], '{:.0f}')} | "
            f"{measured(runs, 'peak_rss_mb', '{:,.0f}')} | {measured(runs, 'val_acc_mirror', '{:.2%}')} | "
            f"{measured(runs, 'val_acc_mirror_shift1', '{:.2%}')} |"
        )
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--rows",
        nargs="+",
        choices=list(ALL_ROWS),
        default=list(ROWS),
        help="rows to run; default: the one-knob rows (the pilots are named explicitly)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "recipes")
    parser.add_argument(
        "--reuse",
        type=Path,
        nargs="+",
        default=[],
        help="recipes.json files whose cells with the same overrides, epochs and seed are taken "
        "instead of run again (measured on this CPU)",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="a folder to copy each run's last checkpoint to, as <row>_seed<k>.ckpt (say, a teacher for distillation)",
    )
    parser.add_argument(
        "--plan", action="store_true", help="only print which cells --reuse would take and which would run, and why"
    )
    parser.add_argument("--render", action="store_true", help="only rewrite <out>/recipes.md from its recipes.json")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="rerun the given rows and seeds into the existing <out>/recipes.json (a failed cell)",
    )
    return parser.parse_args()


def kept(args: argparse.Namespace, name: str, seed: int) -> Path | None:
    return args.keep / f"{name}_seed{seed}.ckpt" if args.keep else None


def rerun_cells(args: argparse.Namespace) -> dict[str, Any]:
    """The existing report with the given cells run again; only on its own CPU, or the rows would not compare."""
    from fmnist_lightning.training.provenance import cpu_model

    report = json.loads((args.out / "recipes.json").read_text())
    if report["cpu"] != cpu_model():
        sys.exit(f"error: {args.out}/recipes.json was measured on {report['cpu']}, this is {cpu_model()}")
    for seed in args.seeds:
        for name in args.rows:
            runs = report["rows"].setdefault(name, [])
            report["overrides"][name] = ALL_ROWS[name]
            runs[:] = [r for r in runs if r["seed"] != seed] + [
                run_row(ALL_ROWS[name], seed, report["epochs"], kept(args, name, seed))
                | {"seed": seed, "settings": settings_digest(row_overrides(ALL_ROWS[name], report["epochs"]))}
            ]
            runs.sort(key=lambda r: r["seed"])
            print(name, seed, runs, flush=True)
    report["reruns"] = [*report.get("reruns", []), "python bench/recipes.py " + " ".join(sys.argv[1:])]
    return report


def run_cells(args: argparse.Namespace) -> dict[str, Any]:
    """A new report, each cell run unless a --reuse file measured it on this CPU already. Which cells are reused and
    which run is printed first, with why a cell of the same row name in a --reuse file is not taken (--plan: only
    that), so an hour's rerun is seen before it starts."""
    from fmnist_lightning.training.provenance import cpu_model

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in args.rows}
    earlier = [json.loads(path.read_text()) for path in args.reuse]
    if any(r["cpu"] != cpu_model() for r in earlier):
        sys.exit(f"error: --reuse: every file must have been measured on this CPU ({cpu_model()})")
    digests = {name: settings_digest(row_overrides(ALL_ROWS[name], args.epochs)) for name in args.rows}
    plan: list[tuple[int, str, dict[str, Any] | None]] = []
    for seed in args.seeds:
        for name in args.rows:
            done = reused(earlier, ALL_ROWS[name], args.epochs, seed, digests[name])
            plan.append((seed, name, done))
            if done:
                print(f"reuse {name} seed {seed}: measured as {done['reused_from']}", file=sys.stderr)
                continue
            print(f"run {name} seed {seed}", file=sys.stderr)
            for note in missed(earlier, name, ALL_ROWS[name], args.epochs, seed):
                print(f"  not reused from {note}", file=sys.stderr)
    if args.plan:
        sys.exit(0)
    for seed, name, done in plan:
        if done is None:
            done = run_row(ALL_ROWS[name], seed, args.epochs, kept(args, name, seed)) | {
                "seed": seed,
                "settings": digests[name],
            }
        rows[name].append(done)
        print(name, seed, rows[name][-1], flush=True)
    return {
        "cpu": cpu_model(),
        "date": time.strftime("%Y-%m-%d"),
        "epochs": args.epochs,
        "seeds": args.seeds,
        "command": "python bench/recipes.py " + " ".join(sys.argv[1:]),
        "rows": rows,
        "overrides": {name: ALL_ROWS[name] for name in args.rows},
    }


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.render:
        (args.out / "recipes.md").write_text(markdown(json.loads((args.out / "recipes.json").read_text())))
        return
    report = rerun_cells(args) if args.replace else run_cells(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recipes.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "recipes.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
