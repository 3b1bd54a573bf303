"""Several machines for real, simulated: one Optuna study shared by workers on three hosts (PostgreSQL, and a
journal file on a shared filesystem), a worker killed with ``kill -9`` mid-trial, the summary built on a fourth
host from the storage alone; and multi-node DDP over two hosts.

The hosts are network namespaces on a private bridge (``simulated_hosts``); the PostgreSQL server is Debian's,
started here on one of them. Needs root and ``ip``: skipped with the reason otherwise (CI runs as root).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli_overrides, run_cli
from simulated_hosts import (
    DUMP_TRIALS,
    Hosts,
    Postgres,
    killed_trial_rerun,
    postgres_bin,
    summary_from_storage,
    unavailable,
)

pytest.importorskip("optuna", reason="needs the [sweeps] extra: pip install -e '.[sweeps]'")
WHY_NOT = unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.hosts, pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")]

MAX_TRIALS = 9
WORKERS = ("h1", "h2", "h3")
# Small trials, but long enough (3 epochs of 125 batches of 4; 4 batches were a few milliseconds) that a worker
# can be killed in the middle of one.
TRIAL = [
    "model=linear",
    "data.batch_size=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.max_epochs=3",
    "hydra/sweeper/pruner=none",
]


def worker_command(data_root: Path, log_dir: Path, storage: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fmnist_lightning",
        *cli_overrides(data_root, log_dir),
        *TRIAL,
        "hparams_search=lr_wd",
        f"hydra.sweeper.storage='{storage}'",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=null",
        f"hydra.sweeper.max_trials={MAX_TRIALS}",
        "hydra.sweeper.heartbeat_interval=1",
        # Three workers, their trainings and a database share 2 cores: a beat may come late without its trial
        # being dead.
        "hydra.sweeper.grace_period=10",
        "hydra.sweeper.retry_failed=1",
    ]


def run_study(hosts: Hosts, data_root: Path, tmp_path: Path, storage: str) -> None:
    """Three workers of one study; the one on h2 is killed while its first trial trains; all the checks."""
    workers = {}
    for host in WORKERS:
        log = (tmp_path / f"{host}.log").open("w")
        workers[host] = hosts.popen(
            host,
            worker_command(data_root, tmp_path / host, storage),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        )
    deadline = time.monotonic() + 180
    # A checkpoint of h2's trial means it is past its first epoch and has two to go.
    while not list((tmp_path / "h2").glob("multirun/*/trial_*/checkpoints/*.ckpt")):
        assert workers["h2"].poll() is None and time.monotonic() < deadline, (tmp_path / "h2.log").read_text()[-3000:]
        time.sleep(0.05)
    hosts.kill(workers["h2"])
    for host in ("h1", "h3"):
        assert workers[host].wait(timeout=300) == 0, (tmp_path / f"{host}.log").read_text()[-3000:]

    def on_h4(argv: list[str]) -> subprocess.CompletedProcess:
        return hosts.run("h4", argv)

    trials, killed, retry = killed_trial_rerun(on_h4, storage, "shared", MAX_TRIALS)
    assert killed["host"] == "h2" and retry["host"] in ("h1", "h3")
    rows = summary_from_storage(on_h4, storage, "shared", tmp_path / "summary", trials)
    assert {row["host"] for row in rows} >= {"h1", "h2", "h3"}
    by_job = {row["job"]: row for row in rows}
    assert by_job[f"trial_{killed['number']}"]["status"] == "failed"
    assert f"retried as trial {retry['number']}" in by_job[f"trial_{killed['number']}"]["error"]
    assert all(Path(row["run_dir"]).is_dir() for row in rows if row["status"] == "completed")


@pytest.mark.skipif(postgres_bin() is None, reason="needs Debian's postgresql package (.ci/run installs it)")
def test_three_hosts_share_a_postgresql_study_and_recover_a_killed_worker(data_root: Path, tmp_path: Path) -> None:
    with Hosts(["db", *WORKERS, "h4"]) as hosts:
        server = Postgres(hosts, "db")
        try:
            run_study(hosts, data_root, tmp_path, server.url)
        finally:
            server.stop()


def test_three_hosts_share_a_journal_study_on_a_shared_filesystem(data_root: Path, tmp_path: Path) -> None:
    with Hosts([*WORKERS, "h4"]) as hosts:
        # Four slashes: an absolute path, the same on every host.
        run_study(hosts, data_root, tmp_path, f"journal:///{tmp_path / 'shared' / 'study.journal'}")


def node_commands(style: str, common: list[str], run_dir: Path) -> list[tuple[list[str], dict[str, str]]]:
    """Each node's command line and environment, as docs/scaling-out.md gives them."""
    args = [*common, "trainer.devices=1", "trainer.num_nodes=2", f"hydra.run.dir={run_dir}"]
    if style == "env":  # Lightning's own cluster environment: the first node's address and each node's rank
        return [
            (
                [sys.executable, "-m", "fmnist_lightning", *args],
                {"MASTER_ADDR": "n1", "MASTER_PORT": "29500", "NODE_RANK": str(rank)},
            )
            for rank in range(2)
        ]
    return [
        (
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=n1",
                "--master-port=29501",
                "-m",
                "fmnist_lightning",
                *args,
            ],
            {},
        )
        for rank in range(2)
    ]


def test_ddp_across_two_hosts_matches_ddp_on_one(data_root: Path, tmp_path: Path) -> None:
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
    one = json.loads((tmp_path / "one_host" / "metrics.json").read_text())

    with Hosts(["n1", "n2"]) as hosts:
        for style in ("env", "torchrun"):
            run_dir = tmp_path / f"two_hosts_{style}"
            nodes = [
                hosts.popen(
                    node,
                    command,
                    stdout=(tmp_path / f"{style}_{node}.log").open("w"),
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                )
                for node, (command, env) in zip(hosts.names, node_commands(style, common, run_dir), strict=True)
            ]
            for node, proc in zip(hosts.names, nodes, strict=True):
                assert proc.wait(timeout=240) == 0, (tmp_path / f"{style}_{node}.log").read_text()[-3000:]
            two = json.loads((run_dir / "metrics.json").read_text())
            assert two["test/acc"] == one["test/acc"], style
            assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6), style


TRACKING_PASSWORD = "trk-pass-8842"
HEALTH = """
import sys, time, urllib.request
deadline = time.monotonic() + 120
while True:
    try:
        urllib.request.urlopen(sys.argv[1], timeout=2).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            raise SystemExit("no answer from " + sys.argv[1])
        time.sleep(0.5)
"""


@pytest.mark.skipif(postgres_bin() is None, reason="needs Debian's postgresql package (.ci/run installs it)")
def test_no_password_of_the_storage_or_tracking_url_reaches_a_file_or_the_console(
    data_root: Path, tmp_path: Path
) -> None:
    """A 2-trial search whose Optuna storage is a PostgreSQL role with a password (scram-sha-256) and whose MLflow
    tracking URL carries another, logging to TensorBoard, CSV, MLflow and W&B (offline): both passwords used for
    real, neither in any file the sweep, its trackers or the tracking server wrote, nor on the console."""
    store = tmp_path / "mlflow-server"
    out = tmp_path / "outputs"
    with Hosts(["db", "tracker", "h1"]) as hosts:
        server = Postgres(hosts, "db")
        try:
            address = hosts.address("tracker")
            hosts.popen(
                "tracker",
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "server",
                    "--host",
                    address,
                    "--port",
                    "5000",
                    "--workers",
                    "1",
                    "--backend-store-uri",
                    f"sqlite:///{store / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(store / "artifacts"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            up = hosts.run("h1", [sys.executable, "-c", HEALTH, f"http://{address}:5000/health"], timeout=180)
            assert up.returncode == 0, up.stderr[-2000:]
            sweep = hosts.run(
                "h1",
                [
                    sys.executable,
                    "-m",
                    "fmnist_lightning",
                    *cli_overrides(data_root, out),
                    *TRIAL[:4],
                    "trainer.max_epochs=1",
                    "hparams_search=lr_wd",
                    "hydra.sweeper.n_trials=2",
                    f"hydra.sweeper.storage='{server.url}'",
                    "hydra.sweeper.study_name=masked",
                    "logger=[tensorboard,csv,mlflow,wandb]",
                    f"logger.mlflow.tracking_uri=http://fmnist:{TRACKING_PASSWORD}@{address}:5000",
                    "logger.mlflow.artifact_location=null",
                ],
                timeout=600,
                env={**os.environ, "HYDRA_FULL_ERROR": "0"},
            )
            assert sweep.returncode == 0, sweep.stderr[-3000:]
            dumped = hosts.run("h1", [sys.executable, "-c", DUMP_TRIALS, server.url, "masked"])
            assert [t["state"] for t in json.loads(dumped.stdout)] == ["COMPLETE", "COMPLETE"], dumped.stderr[-2000:]
            runs = hosts.run(
                "h1",
                [
                    sys.executable,
                    "-c",
                    "import mlflow, sys; c = mlflow.MlflowClient(sys.argv[1]); "
                    "print(len(c.search_runs([c.get_experiment_by_name('fmnist').experiment_id])))",
                    f"http://{address}:5000",
                ],
            )
            assert runs.stdout.strip() == "2", runs.stderr[-2000:]  # the tracking URL worked, password and all
        finally:
            server.stop()
    for password in (Postgres.PASSWORD, TRACKING_PASSWORD):
        assert password not in sweep.stdout + sweep.stderr
        leaks = [
            p
            for folder in (out, store)
            for p in folder.rglob("*")
            if p.is_file() and password.encode() in p.read_bytes()
        ]
        assert not leaks, f"{password} is in {leaks}"
    assert len(list(out.rglob("offline-run-*"))) == 2  # the W&B runs, kept offline in the job directories
    files = [p for p in out.rglob("*") if p.is_file()]
    # The places it would have been: Hydra's files, the record in each checkpoint, run.json, the logs.
    assert {p.name for p in files} >= {
        "hydra.yaml",
        "overrides.yaml",
        "config.yaml",
        "run.json",
        "hparams.yaml",
        "train.log",
        "last.ckpt",
        "summary.csv",
    }
