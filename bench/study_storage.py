"""What a study's storage costs per trial: sqlite, a journal file and PostgreSQL, three workers at once.

Three worker processes on three simulated hosts (network namespaces, ``tests/simulated_hosts.py``;
PostgreSQL on a fourth) share one study with a study-wide budget. Each worker makes exactly the
storage calls one trial of ``hparams_search=...`` makes, through the project's own code: the
sweeper's recovery and budget checks, ask, its heartbeats; the job's start attributes, heartbeats,
one report and pruning check per epoch (``OptunaPruning``), its results; the tell. Training itself is
a sleep, so the figure is the storage's time alone: the seconds spent inside storage calls per trial.
The heartbeat threads' calls run beside training; they are counted too, and shown on their own.

Needs root (network namespaces) and Debian's postgresql. Usage:
    python bench/study_storage.py [--trials 30] [--epochs 5] [--train-s 1.0] [--rounds 2]
Writes bench/results/study_storage.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORKERS = ("h1", "h2", "h3")


def worker(url: str, max_trials: int, epochs: int, train_s: float, out: Path) -> None:
    """One worker's loop: the storage calls of each trial, timed by kind."""
    import optuna

    from fmnist_lightning.sweeps.study_budget import SWEEPER_ATTR, SWEEPER_ID, over_budget, recover, room
    from fmnist_lightning.sweeps.study_storage import Heartbeats, open_storage
    from fmnist_lightning.sweeps.study_trial import TRIAL_ENV, StudyTrial, started_attrs
    from fmnist_lightning.training.callbacks.optuna_pruning import OptunaPruning
    from fmnist_lightning.training.provenance import cpu_model

    spent: dict[str, float] = defaultdict(float)

    @contextmanager
    def timed(kind: str):
        start = time.perf_counter()
        yield
        spent[kind] += time.perf_counter() - start

    class TimedBeats(Heartbeats):
        def beat(self) -> None:
            with timed("heartbeats"):
                super().beat()

    space = {"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    with timed("open (once per worker)"):
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
        storage = open_storage(url, heartbeat_interval=1, stale_callback=retry)
        study = optuna.create_study(study_name="bench", storage=storage, direction="maximize", load_if_exists=True)
    ran = 0
    run_dir = Path(tempfile.mkdtemp())
    while True:
        with timed("sweeper: recover, budget, ask, tell"):
            recover(study, retry)
            budget = room(study, max_trials, max_retry=1)
            if budget.done:
                break
            if budget.free <= 0:
                time.sleep(0.2)
                continue
            trial = study.ask(space)
            if over_budget(study, trial.number, max_trials, max_retry=1):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                continue
            trial.set_user_attr(SWEEPER_ATTR, SWEEPER_ID)
        os.environ.update(
            {
                TRIAL_ENV["storage"]: url,
                TRIAL_ENV["study"]: "bench",
                TRIAL_ENV["trial"]: str(trial._trial_id),
                TRIAL_ENV["heartbeat"]: "1",
            }
        )
        with TimedBeats(storage, [trial._trial_id], 1):  # the sweeper's beats while the job runs
            link = StudyTrial.from_env()
            with timed("job: start, reports, results"):
                link.set_attrs(started_attrs(run_dir, cpu_model()))
                pruning = OptunaPruning()
                pruning.connect()
            with TimedBeats(link.storage, [trial._trial_id], 1):  # the job's own
                for epoch in range(1, epochs + 1):
                    time.sleep(train_s / epochs)
                    with timed("job: start, reports, results"):
                        pruning.trial.report(0.5 + 0.01 * epoch, step=epoch)
                        pruning.trial.should_prune()
            with timed("job: start, reports, results"):
                link.record_results(
                    {"val/acc_best": 0.55, "test/acc": 0.55, "params": 7850, "epochs": epochs}, "val/acc_best"
                )
        with timed("sweeper: recover, budget, ask, tell"):
            study.tell(trial, 0.55)
        ran += 1
    out.write_text(json.dumps({"trials": ran, "spent": spent}))


def run_storage(kind: str, args: argparse.Namespace, work: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from simulated_hosts import Hosts, Postgres

    names = [*WORKERS] + (["db"] if kind == "postgresql" else [])
    with Hosts(names) as hosts:
        server = Postgres(hosts, "db") if kind == "postgresql" else None
        try:
            url = {"sqlite": f"sqlite:///{work}/{kind}.db", "journal": f"journal:///{work}/{kind}.journal"}.get(
                kind
            ) or server.url
            outs = [work / f"{kind}_{host}.json" for host in WORKERS]
            started = time.perf_counter()
            procs = [
                hosts.popen(
                    host,
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        url,
                        "--trials",
                        str(args.trials),
                        "--epochs",
                        str(args.epochs),
                        "--train-s",
                        str(args.train_s),
                        "--out",
                        str(out),
                    ],
                )
                for host, out in zip(WORKERS, outs, strict=True)
            ]
            if any(proc.wait(timeout=900) != 0 for proc in procs):
                raise SystemExit(f"error: a {kind} worker failed")
            wall = time.perf_counter() - started
        finally:
            if server is not None:
                server.stop()
    results = [json.loads(out.read_text()) for out in outs]
    trials = sum(r["trials"] for r in results)
    kinds = {k for r in results for k in r["spent"]}
    totals = {k: sum(r["spent"].get(k, 0.0) for r in results) for k in kinds}
    per_trial = {k: v / trials for k, v in totals.items() if not k.startswith("open")}
    return {
        "storage": kind,
        "trials": trials,
        "wall_s": wall,
        "per_trial_s": per_trial,
        "storage_s_per_trial": sum(per_trial.values()),
        "open_s_per_worker": totals["open (once per worker)"] / len(results),
    }


def table(rounds: list[list[dict]], cpu: str, args: argparse.Namespace) -> str:
    by_kind: dict[str, list[dict]] = defaultdict(list)
    for round_ in rounds:
        for row in round_:
            by_kind[row["storage"]].append(row)
    lines = [
        f"# Storage cost per trial, 3 workers on 3 simulated hosts ({cpu}, 2 cores)",
        "",
        f"`python bench/study_storage.py --trials {args.trials} --epochs {args.epochs} --train-s {args.train_s} "
        f"--rounds {args.rounds}`: the seconds spent inside storage calls per trial (mean over "
        f"{args.rounds} interleaved rounds; the range in brackets), by whom.",
        "",
        "| storage | trials per round | storage s per trial | sweeper (recover, budget, ask, tell) | "
        "job (start, per-epoch report and pruning check, results) | heartbeats (2 threads, 1 s) | "
        "opening it, once per worker |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, rows in by_kind.items():

        def cell(values: list[float]) -> str:
            return f"{statistics.fmean(values):.3f} [{min(values):.3f}-{max(values):.3f}]"

        def part(key: str, rows: list[dict] = rows) -> str:
            return cell([r["per_trial_s"].get(key, 0.0) for r in rows])

        lines.append(
            f"| {kind} | {rows[0]['trials']} | {cell([r['storage_s_per_trial'] for r in rows])} | "
            f"{part('sweeper: recover, budget, ask, tell')} | {part('job: start, reports, results')} | "
            f"{part('heartbeats')} | {cell([r['open_s_per_worker'] for r in rows])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="the study-wide budget (max_trials)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-s", type=float, default=1.0, help="seconds of (slept) training per trial")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.trials, args.epochs, args.train_s, args.out)
        return
    sys.path.insert(0, str(ROOT / "src"))
    from fmnist_lightning.training.provenance import cpu_model

    rounds = []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as work:
            rounds.append([run_storage(kind, args, Path(work)) for kind in ("sqlite", "journal", "postgresql")])
    RESULTS.mkdir(exist_ok=True)
    cpu = cpu_model()
    (RESULTS / "study_storage.json").write_text(
        json.dumps({"cpu": cpu, "args": vars(args) | {"out": None}, "rounds": rounds}, indent=2) + "\n"
    )
    (RESULTS / "study_storage.md").write_text(table(rounds, cpu, args))
    print((RESULTS / "study_storage.md").read_text())


if __name__ == "__main__":
    main()
