"""SLURM for real: Debian's slurmctld on one simulated host, slurmd on two more, munge for authentication.

Everything goes through the scheduler as a user's jobs would: a sweep submitted by
``hydra/launcher=slurm`` (sbatch, srun, submitit), a job requeued after its first checkpoint, a
2-node DDP job whose ranks srun starts, and the documented array of Optuna workers
(``docs/slurm/optuna_array.sbatch``) with one task cancelled mid-trial. Needs root, ``ip`` and
Debian's slurm-wlm and munge (``.ci/run`` installs them): skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import cli_overrides, run_cli
from simulated_hosts import Hosts, killed_trial_rerun, summary_from_storage, unavailable
from slurm_cluster import SlurmCluster, slurm_unavailable

WHY_NOT = unavailable() or slurm_unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.hosts, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

LOGIN = "ctl"  # the controller's host doubles as the login node users submit from
NODES = ["n1", "n2"]
# Whole epochs of the 500-image training split; deterministic on the CPU, so a requeued run can match to the bit.
# Batches of 4 (125 steps an epoch; at 8 an epoch took 0.42 s, at 32 0.23 s, which left a 0.7 s window after the
# first checkpoint: AMD EPYC Zen 4, 2026-12-08):
# a requeue's signal goes through slurmctld and slurmd, and must land before the run ends.
RUN = [
    "trainer.max_epochs=4",
    "data.batch_size=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.deterministic=true",
    "seed=7",
]
LAUNCHER = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={SlurmCluster.PARTITION}",
    "hydra.launcher.cpus_per_task=2",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=20",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    with Hosts([LOGIN, *NODES]) as hosts, SlurmCluster(hosts, LOGIN, NODES) as slurm:
        yield slurm


def submit(cluster: SlurmCluster, log: Path, *args: str) -> subprocess.Popen:
    """``python -m fmnist_lightning -m <args>`` on the login node, as a user submits a sweep."""
    return cluster.hosts.popen(
        LOGIN,
        [sys.executable, "-m", "fmnist_lightning", "-m", *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**cluster.env, "HYDRA_FULL_ERROR": "0"},
    )


def finish(proc: subprocess.Popen, log: Path, cluster: SlurmCluster, timeout: float = 420) -> str:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        cluster.hosts.kill(proc)
        code = None
    text = log.read_text()
    assert code == 0, f"{text[-4000:]}\n{cluster.logs()}"
    return text


def start_requeued(cluster: SlurmCluster, job_id: str, stopped_at: float) -> None:
    """Start a requeued job now rather than after SLURM's hold, but not in the second its old credential was revoked.

    slurmd refuses a job whose credential is no newer, in whole seconds, than its revocation ("Killing non-startable
    batch JobId=4: Job credential revoked", seen in CI when the restart came 0.7 s after a scancel). That is what
    SLURM's hold of a requeued job (AuthInfo=cred_expire) waits out; two seconds after the stop are enough here.
    """
    time.sleep(max(0.0, stopped_at + 2.0 - time.time()))
    started = cluster.run(LOGIN, ["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    assert started.returncode == 0, started.stderr


def job_dirs(log_dir: Path) -> list[Path]:
    (sweep,) = (log_dir / "multirun").glob("*")
    return sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def two_job_sweep(cluster: SlurmCluster, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    log_dir = tmp_path_factory.mktemp("sweep")
    proc = submit(
        cluster, log_dir / "console.log", *cli_overrides(data_root, log_dir), *RUN, *LAUNCHER, "optim.lr=1e-3,3e-3"
    )
    return log_dir, finish(proc, log_dir / "console.log", cluster)


def test_a_two_job_sweep_runs_through_sbatch_and_polls_quietly_without_accounting(two_job_sweep) -> None:
    log_dir, console = two_job_sweep
    assert "Sweep summary (2 jobs: 2 completed, 0 failed, 0 incomplete)" in console
    # Accounting is off on this cluster: one line says so, and squeue answers every poll instead of sacct.
    assert "Bypassing sacct error" not in console and "accounting storage is disabled" not in console.replace(
        "(sacct: Slurm accounting storage is disabled)", ""
    )
    assert console.count("job states come from squeue") == 1
    for job in job_dirs(log_dir):
        record = json.loads((job / "run.json").read_text())
        assert record["machine"]["hostname"] in NODES  # it ran on a compute node, not where it was submitted
        (attempt,) = record["attempts"]
        assert attempt["slurm_job_id"] and attempt["slurm_restarts"] == 0
        assert json.loads((job / "metrics.json").read_text())["epochs"] == 4


def epoch_times(run: Path) -> dict[int, list[float]]:
    """Each epoch's ``val/acc`` events in the run's TensorBoard files: epoch -> wall times of its events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: dict[int, list[float]] = {}
    for events in sorted((run / "tensorboard").glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events)).Reload()
        if "val/acc" not in acc.Tags()["scalars"]:
            continue
        epochs = {e.step: e.value for e in acc.Scalars("epoch")} if "epoch" in acc.Tags()["scalars"] else {}
        for event in acc.Scalars("val/acc"):
            times.setdefault(int(epochs.get(event.step, -1)), []).append(event.wall_time)
    return times


# How a running job gets requeued: by SLURM (preemption, node failure, an admin: SIGTERM, then the requeue), or
# by the job itself on the warning SLURM sends before the time limit (sbatch --signal=USR2@<s>, sent to the job's
# steps as scancel --signal sends it; submitit requeues the job on it).
REQUEUES = {"scontrol-requeue": ["scontrol", "requeue"], "time-limit-signal": ["scancel", "--signal=USR2"]}
STOPPED_BY = {"scontrol-requeue": "SIGTERM", "time-limit-signal": "SIGUSR2"}


@pytest.mark.parametrize("how", REQUEUES)
def test_a_job_requeued_after_its_first_checkpoint_continues_and_ends_as_if_never_stopped(
    how: str, cluster: SlurmCluster, data_root: Path, tmp_path: Path, two_job_sweep
) -> None:
    """The run stops after a batch with last.ckpt saved; the job's next start continues it in the same directory
    and ends with the test metrics of the same job never stopped."""
    proc = submit(
        cluster, tmp_path / "console.log", *cli_overrides(data_root, tmp_path), *RUN, *LAUNCHER, "optim.lr=1e-3"
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("multirun/*/0/checkpoints/epoch_000.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "console.log").read_text()[-3000:]
        time.sleep(0.02)
    (job_id,) = {p.name for p in tmp_path.glob("multirun/*/.submitit/*") if p.name.isdigit()}
    requeued = cluster.run(LOGIN, [*REQUEUES[how], job_id])
    assert requeued.returncode == 0, requeued.stderr
    requeued_at = time.time()
    deadline = time.monotonic() + 60
    while cluster.job_state(job_id) != "PENDING":
        assert time.monotonic() < deadline, cluster.job_state(job_id)
        time.sleep(0.2)
    start_requeued(cluster, job_id, requeued_at)
    finish(proc, tmp_path / "console.log", cluster)

    (run,) = job_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    uninterrupted = json.loads((job_dirs(two_job_sweep[0])[0] / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["test/acc"], metrics["test/loss"]) == (
        uninterrupted["epochs"],
        uninterrupted["test/acc"],
        uninterrupted["test/loss"],
    )
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints.count("last.ckpt") == 1 and not [c for c in checkpoints if "-v" in c], checkpoints
    first, second = json.loads((run / "run.json").read_text())["attempts"]
    assert first["stopped_by"] == STOPPED_BY[how] and first["slurm_restarts"] == 0
    assert second["slurm_restarts"] == 1 and second["resumed_from"].endswith("last.ckpt") and second["ended"]
    assert {first["host"], second["host"]} <= set(NODES)
    # Every epoch was validated once; those done before the requeue were not repeated after it.
    times = epoch_times(run)
    assert sorted(times) == [0, 1, 2, 3] and all(len(t) == 1 for t in times.values()), times
    assert times[0][0] < requeued_at < times[3][0]


def test_a_single_run_submitted_with_sbatch_requeue_continues_after_the_time_limit_signal(
    cluster: SlurmCluster, data_root: Path, tmp_path: Path, two_job_sweep
) -> None:
    """docs/slurm/single_run.sbatch: USR1 to the batch script (as --signal=B:USR1@<s> sends it before the time
    limit) requeues the job; SLURM's SIGTERM stops the run after a batch; the requeued start of the same command
    continues the run in its fixed directory."""
    script = Path(__file__).resolve().parents[1] / "docs" / "slurm" / "single_run.sbatch"
    submitted = cluster.run(
        LOGIN,
        [
            "sbatch",
            "--parsable",
            "--cpus-per-task=2",
            "--mem=2G",
            "--time=20:00",
            f"--output={tmp_path}/job.out",
            "--open-mode=append",
            f"--export=ALL,FMNIST_PYTHON={sys.executable},RUN_ROOT={tmp_path / 'runs'}",
            str(script),
            *cli_overrides(data_root, tmp_path),
            *RUN,
            "optim.lr=1e-3",
            "trainer.devices=1",
        ],
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    run = tmp_path / "runs" / f"job-{job_id}"
    output = tmp_path / "job.out"
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "epoch_000.ckpt").exists():
        assert time.monotonic() < deadline, output.read_text()[-3000:] if output.exists() else ""
        time.sleep(0.02)
    signalled = cluster.run(LOGIN, ["scancel", "--batch", "--signal=USR1", job_id])
    assert signalled.returncode == 0, signalled.stderr
    signalled_at = time.time()
    deadline = time.monotonic() + 60
    while cluster.job_state(job_id) != "PENDING":
        assert time.monotonic() < deadline, output.read_text()[-3000:]
        time.sleep(0.2)
    start_requeued(cluster, job_id, signalled_at)
    deadline = time.monotonic() + 300
    while (state := cluster.job_state(job_id)) != "COMPLETED":
        assert time.monotonic() < deadline and state not in ("FAILED", "CANCELLED", "TIMEOUT"), output.read_text()[
            -3000:
        ]
        time.sleep(0.5)

    metrics = json.loads((run / "metrics.json").read_text())
    uninterrupted = json.loads((job_dirs(two_job_sweep[0])[0] / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["test/acc"], metrics["test/loss"]) == (
        uninterrupted["epochs"],
        uninterrupted["test/acc"],
        uninterrupted["test/loss"],
    )
    first, second = json.loads((run / "run.json").read_text())["attempts"]
    assert first["stopped_by"] == "SIGTERM" and second["slurm_restarts"] == 1
    assert second["resumed_from"].endswith("last.ckpt")
    # One best and one last, no second kind; which epoch is best depends on the CPU's kernels, so ask the run.
    best = Path(metrics["best_model_path"]).name
    assert sorted(p.name for p in run.glob("**/*.ckpt")) == sorted([best, "last.ckpt"])
    assert "continues" in output.read_text() or "continuing" in output.read_text()


def test_two_node_ddp_through_slurm_matches_ddp_on_one_host(
    cluster: SlurmCluster, data_root: Path, tmp_path: Path
) -> None:
    """trainer.num_nodes=2 trainer.devices=1 through hydra/launcher=slurm: srun starts one rank on each node,
    Lightning takes rank and world size from SLURM, rank 0 writes the results."""
    common = [
        *cli_overrides(data_root, tmp_path),
        "model=linear",
        "trainer=ddp",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "seed=3",
    ]
    one_host = run_cli(*common, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'one_host'}")
    assert one_host.returncode == 0, one_host.stderr[-3000:]
    expected = json.loads((tmp_path / "one_host" / "metrics.json").read_text())

    proc = submit(
        cluster,
        tmp_path / "console.log",
        *common,
        *LAUNCHER,
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "hydra.launcher.cpus_per_task=1",
    )
    finish(proc, tmp_path / "console.log", cluster)
    (run,) = job_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] == expected["test/acc"]
    assert metrics["test/loss"] == pytest.approx(expected["test/loss"], rel=1e-6)
    ranks = json.loads((run / "run.json").read_text())["ranks"]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["host"] for r in ranks} == set(NODES), ranks


MAX_TRIALS = 6
# scancel reaches the task through slurmctld and slurmd, which can take most of a second: the two epochs
# left after a trial's first checkpoint must outlast that, or the trial completes first and nothing is left
# to fail (CI, stop 48). The training split has 500 images, so batches of one give 500 steps an epoch (at 2, an
# epoch took 0.39 s: AMD EPYC Zen 4, 2026-12-08); a limit_train_batches above the split's 16 batches of 32 changed
# nothing.
TRIAL = [
    "model=linear",
    "data.batch_size=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.max_epochs=3",
    "hydra/sweeper/pruner=none",
]


def test_an_array_of_optuna_workers_shares_one_study_and_survives_a_cancelled_task(
    cluster: SlurmCluster, data_root: Path, tmp_path: Path
) -> None:
    """The documented sbatch script, --array=0-2: three workers of one journal study on the shared filesystem;
    task 1 is cancelled (scancel) while its first trial trains; that trial ends FAIL and another task reruns it."""
    storage = f"journal:///{tmp_path / 'study.journal'}"
    script = Path(__file__).resolve().parents[1] / "docs" / "slurm" / "optuna_array.sbatch"
    submitted = cluster.run(
        LOGIN,
        [
            "sbatch",
            "--parsable",
            "--array=0-2",
            "--cpus-per-task=1",
            "--mem=2G",
            f"--output={tmp_path}/task_%a.out",
            f"--export=ALL,FMNIST_PYTHON={sys.executable},SWEEP_ROOT={tmp_path / 'sweeps'}",
            str(script),
            "hparams_search=lr_wd",
            *cli_overrides(data_root, tmp_path),
            *TRIAL,
            f"hydra.sweeper.storage='{storage}'",
            "hydra.sweeper.study_name=array",
            f"hydra.sweeper.max_trials={MAX_TRIALS}",
            "hydra.sweeper.heartbeat_interval=1",
            "hydra.sweeper.grace_period=6",
            "hydra.sweeper.retry_failed=1",
        ],
    )
    assert submitted.returncode == 0, submitted.stderr
    array_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("sweeps/worker_1/trial_*/checkpoints/*.ckpt")):
        assert time.monotonic() < deadline, cluster.logs()
        time.sleep(0.05)
    cancelled = cluster.run(LOGIN, ["scancel", f"{array_id}_1"])
    assert cancelled.returncode == 0, cancelled.stderr
    deadline = time.monotonic() + 400
    while queued := cluster.run(LOGIN, ["squeue", "-h", "-j", array_id]).stdout.strip():
        assert time.monotonic() < deadline, queued
        time.sleep(1)
    for task in (0, 2):
        output = (tmp_path / f"task_{task}.out").read_text()
        assert cluster.job_state(f"{array_id}_{task}") == "COMPLETED", output[-3000:]
    assert cluster.job_state(f"{array_id}_1") == "CANCELLED"

    def on_login(argv: list[str]) -> subprocess.CompletedProcess:
        return cluster.run(LOGIN, argv)

    trials, _, _ = killed_trial_rerun(on_login, storage, "array", MAX_TRIALS)
    rows = summary_from_storage(on_login, storage, "array", tmp_path / "summary", trials)
    assert {row["host"] for row in rows if row["status"] == "completed"} <= set(NODES)
    assert os.path.getsize(tmp_path / "summary" / "summary.md") > 0
