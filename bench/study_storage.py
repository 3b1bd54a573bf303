"""What a study's storage costs per trial: sqlite, a journal file and PostgreSQL, three workers at once.

Three worker processes on three simulated hosts (network namespaces, ``tests/simulated_hosts.py``;
PostgreSQL on a fourth) share one study with a study-wide budget. Each worker runs the sweeper's own
trial loop (``OptunaSweeper.sweep``: recovery and budget checks, ask, its heartbeats, the tell) with a
launcher whose jobs make the storage calls a trial's job makes, through the project's own code: the
start attributes, heartbeats, one report and pruning check per epoch (``OptunaPruning``), the results.
Training itself is a sleep, so the figure is the storage's time alone: the seconds spent inside storage calls per trial.
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
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
WORKERS = ("h1", "h2", "h3")
ENV_SET = "++hydra.job.env_set."


SWEEPER = "sweeper: recover, budget, ask, tell"
JOB = "job: start, reports, results"
OPEN = "open (once per worker)"


def worker(url: str, max_trials: int, epochs: int, train_s: float, out: Path) -> None:
    """One worker: the sweeper's own loop (``OptunaSweeper.sweep``, as ``hparams_search=`` runs it) with a launcher
    whose jobs sleep instead of training; the seconds inside storage calls, by kind."""
    from omegaconf import OmegaConf

    from fmnist_lightning.sweeps import study_storage
    from hydra_plugins.fmnist_optuna_sweeper import optuna_sweeper

    spent: dict[str, float] = defaultdict(float)
    # Every heartbeat, the sweeper's and the jobs', is timed: the bench's own process alone.
    study_storage.Heartbeats.beat = timed(spent, "heartbeats")(study_storage.Heartbeats.beat)
    # The sweeper's waits for other workers' last trials are not storage time (its module's sleep alone: Optuna's
    # own retries on a locked journal are).
    optuna_sweeper.time = SimpleNamespace(sleep=timed(spent, "waiting")(time.sleep))
    sweeper = optuna_sweeper.OptunaSweeper(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.TPESampler"}),
        storage=url,
        study_name="bench",
        n_trials=None,
        max_trials=max_trials,
        heartbeat_interval=1,
        retry_failed=1,
        params=OmegaConf.create({"optim.lr": "tag(log, interval(1e-4, 1e-1))"}),
    )
    sweeper._open_study = timed(spent, OPEN)(sweeper._open_study)  # its own column
    sweep_dir = Path(tempfile.mkdtemp())
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    launcher = SleepingLauncher(epochs, train_s, sweep_dir, spent)
    sweeper.launcher = launcher
    started = time.perf_counter()
    sweeper.sweep([])
    spent[SWEEPER] = time.perf_counter() - started - spent.pop("waiting", 0.0) - spent[OPEN] - launcher.wall
    out.write_text(json.dumps({"trials": launcher.ran, "spent": spent}))


def timed(spent: dict[str, float], kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A function's calls timed into ``spent[kind]``."""

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - start

        return timed_call

    return wrap


class SleepingLauncher:
    """Hydra's launcher interface (``launch``) for the sweeper: each job sleeps where training would run and makes
    the storage calls a trial's job makes, through the project's code: its start attributes and heartbeats, a
    report and pruning check per epoch (``OptunaPruning``), its results."""

    def __init__(self, epochs: int, train_s: float, sweep_dir: Path, spent: dict[str, float]) -> None:
        self.epochs, self.train_s, self.sweep_dir, self.spent = epochs, train_s, sweep_dir, spent
        self.ran, self.wall = 0, 0.0

    def launch(self, job_overrides: list[tuple[str, ...]], initial_job_idx: int) -> list[Any]:
        from hydra.core.utils import JobReturn, JobStatus
        from omegaconf import OmegaConf

        returns = []
        started = time.perf_counter()
        for number, overrides in enumerate(job_overrides, initial_job_idx):
            # The trial's environment, as hydra.job.env_set gives it to a job.
            for key, _, value in (o.partition("=") for o in overrides):
                if key.startswith(ENV_SET):
                    os.environ[key.removeprefix(ENV_SET)] = json.loads(value)
            run_dir = self.sweep_dir / str(number)
            run_dir.mkdir()
            self.job(run_dir)
            hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(run_dir)}}})
            returns.append(JobReturn(overrides, hydra_cfg=hydra_cfg, status=JobStatus.COMPLETED, _return_value=0.55))
        self.wall += time.perf_counter() - started
        return returns

    def job(self, run_dir: Path) -> None:
        from fmnist_lightning.sweeps.study_storage import Heartbeats
        from fmnist_lightning.sweeps.study_trial import StudyTrial, started_attrs
        from fmnist_lightning.training.callbacks.optuna_pruning import OptunaPruning
        from fmnist_lightning.training.provenance import cpu_model

        link = StudyTrial.from_env()
        assert link is not None  # the sweeper's overrides name the trial
        in_storage = timed(self.spent, JOB)
        in_storage(link.set_attrs)(started_attrs(run_dir, cpu_model()))
        pruning = OptunaPruning()
        in_storage(pruning.connect)()
        with Heartbeats(link.storage, [link.trial_id], 1):
            for epoch in range(1, self.epochs + 1):
                time.sleep(self.train_s / self.epochs)
                in_storage(pruning.trial.report)(0.5 + 0.01 * epoch, step=epoch)
                in_storage(pruning.trial.should_prune)()
        results = {"val/acc_best": 0.55, "test/acc": 0.55, "params": 7850, "epochs": self.epochs}
        in_storage(link.record_results)(results, "val/acc_best")
        self.ran += 1


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
        "open_s_per_worker": totals[OPEN] / len(results),
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
            f"{part(SWEEPER)} | {part(JOB)} | "
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
