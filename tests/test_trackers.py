"""Trackers beside TensorBoard: logger=mlflow against a real MLflow tracking server on 127.0.0.1,
logger=wandb offline read back with wandb's own reader, and one error line before training when a
tracker cannot work. Each job of a multirun is a run of its own in the tracker."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import cli_overrides, run_cli

mlflow = pytest.importorskip("mlflow", reason="the tracking extra: pip install -e '.[tracking]'")
pytest.importorskip("wandb", reason="the tracking extra: pip install -e '.[tracking]'")

TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server(NamedTuple):
    uri: str
    root: Path  # its store: mlflow.db and the artifacts


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``mlflow server`` on loopback with its own SQLite store and artifact folder, stopped after."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    cli = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [
            str(cli),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(root / "server.log").open("w"),
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield Server(uri, root)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_two_job_multirun_is_two_mlflow_runs_with_params_metrics_and_artifacts(
    mlflow_server: Server, data_root: Path, tmp_path: Path
) -> None:
    # The documented way to keep a password off the command line: ${oc.env:...}, resolved inside the run only.
    password = "trk-pass-5519"
    uri = mlflow_server.uri.replace("http://", f"http://fmnist:{password}@")
    result = run_cli(
        "--multirun",
        *cli_overrides(data_root, tmp_path, figures=True),
        *TINY,
        "logger=many",
        "logger.mlflow.tracking_uri=${oc.env:FMNIST_TEST_TRACKING_URI}",
        "logger.mlflow.artifact_location=null",
        "optim.lr=0.001,0.002",
        env={"FMNIST_TEST_TRACKING_URI": uri},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert password not in result.stdout + result.stderr
    # Every file the sweep wrote, and the tracking server's whole store: its database and the uploaded artifacts.
    leaks = [
        p
        for folder in (tmp_path, mlflow_server.root)
        for p in folder.rglob("*")
        if p.is_file() and password.encode() in p.read_bytes()
    ]
    assert not leaks, f"the password is in {leaks}"
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri)
    experiment = client.get_experiment_by_name("fmnist")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["optim/lr"] for r in runs) == ["0.001", "0.002"]
    (sweep,) = (tmp_path / "multirun").iterdir()
    # Each run is named for its job (the sweep, the job's number, what the sweep varied) and grouped by the sweep.
    assert sorted(r.info.run_name for r in runs) == [f"{sweep.name}/0 optim.lr=0.001", f"{sweep.name}/1 optim.lr=0.002"]
    assert {r.data.tags["sweep"] for r in runs} == {sweep.name} and sorted(r.data.tags["job"] for r in runs) == [
        "0",
        "1",
    ]
    for run in runs:
        job_dir = Path(run.data.tags["run_dir"])
        assert job_dir.parent == sweep and job_dir.name == run.data.tags["job"]
        metrics = json.loads((job_dir / "metrics.json").read_text())
        history = client.get_metric_history(run.info.run_id, "val/acc")
        assert len(history) == 2  # one point per epoch
        assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"report.md", "metrics.json", "run.json", "curves.png", "checkpoints", ".hydra"} <= artifacts
        (checkpoint,) = client.list_artifacts(run.info.run_id, "checkpoints")
        assert Path(checkpoint.path).name == Path(metrics["best_model_path"]).name
    # The sweep summary names where each job ran.
    with (sweep / "summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(row["host"] == socket.gethostname() and row["cpu"] for row in rows)


def _wandb_summary(run_dir: Path) -> dict:
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    reader = shutil.which("wandb", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [reader, "leet", "inspect", "--summary", "--json", str(offline)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def _wandb_group(run_dir: Path) -> str:
    """The run's group, as its own records store it (the summary leaves it out)."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    reader = shutil.which("wandb", path=str(Path(sys.executable).parent))
    out = subprocess.run(
        [reader, "leet", "inspect", "--json", str(offline)], capture_output=True, text=True, timeout=120, check=True
    )
    (group,) = set(re.findall(r'"run_group":"([^"]*)"', out.stdout))
    return group


@pytest.mark.slow
def test_wandb_offline_keeps_each_job_in_its_own_run(data_root: Path, tmp_path: Path) -> None:
    result = run_cli("--multirun", *cli_overrides(data_root, tmp_path), *TINY, "logger=wandb", "optim.lr=0.001,0.002")
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "multirun").iterdir()
    ids = set()
    for job_dir in sorted(p for p in sweep.iterdir() if (p / "metrics.json").is_file()):
        metrics = json.loads((job_dir / "metrics.json").read_text())
        summary = _wandb_summary(job_dir)
        ids.add(summary["run_id"])
        lr = job_dir.joinpath(".hydra/overrides.yaml").read_text().split("optim.lr=")[1].split()[0]
        assert summary["name"] == f"{sweep.name}/{job_dir.name} optim.lr={lr}"
        assert _wandb_group(job_dir) == sweep.name
        assert summary["state"] == "finished" and summary["exit_code"] == 0
        assert summary["summary"]["test/acc"] == pytest.approx(metrics["test/acc"])
        assert summary["config"]["optim/lr"] == float(
            job_dir.joinpath(".hydra/overrides.yaml").read_text().split("optim.lr=")[1].split()[0]
        )
    assert len(ids) == 2  # job 2 did not write into job 1's run


def test_an_unreachable_tracking_server_is_one_error_before_training(data_root: Path, tmp_path: Path) -> None:
    uri = f"http://user:pw-unreach-31@127.0.0.1:{free_port()}"
    result = run_cli(
        *cli_overrides(data_root, tmp_path),
        *TINY,
        "logger=mlflow",
        f"logger.mlflow.tracking_uri={uri}",
        "logger.mlflow.artifact_location=null",
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: logger.mlflow.tracking_uri=http://user:***@127.0.0.1:") and "cannot be reached" in last
    )
    assert "pw-unreach-31" not in result.stdout + result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # stopped before the first epoch
    # Hydra's files of the run (.hydra/overrides.yaml, config.yaml, hydra.yaml) and train.log keep it masked too.
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"pw-unreach-31" in p.read_bytes()]
    assert b"http://user:***@127.0.0.1" in next(tmp_path.rglob("overrides.yaml")).read_bytes()


def test_a_local_artifact_folder_with_a_tracking_server_is_refused(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        *cli_overrides(data_root, tmp_path),
        *TINY,
        "logger=mlflow",
        f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 2
    assert "artifact_location=null to use the server's artifact store" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            "+logger.wandb.mode=sideways",
            "error: logger.wandb.mode=sideways: lightning.pytorch.loggers.WandbLogger (logger=wandb) takes one of "
            "online, offline, disabled, shared, null; correct the value, e.g. logger.wandb.mode=online",
        ),
        (
            "+logger.wandb.api_key=s3cret-key-123",
            "error: `logger.wandb.api_key`: lightning.pytorch.loggers.WandbLogger (logger=wandb) takes no argument",
        ),
    ],
)
def test_a_wandb_setting_is_checked_against_wandb_init_before_training(
    data_root: Path, tmp_path: Path, setting: str, line: str
) -> None:
    # WandbLogger hands its **kwargs to wandb.init: a value or key wandb.init refuses failed at the first log.
    result = run_cli(*cli_overrides(data_root, tmp_path), "logger=wandb", setting)
    assert result.returncode == 2, result.stderr[-2000:]
    (error,) = result.stderr.strip().splitlines()
    assert error.startswith(line)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(p.suffix == ".ckpt" or "wandb" in p.parts for p in written), written
    assert all("s3cret-key-123" not in p.read_text(errors="replace") for p in written), "the key reached a file"
    assert "s3cret-key-123" not in result.stderr + result.stdout


def test_a_missing_tracker_package_is_one_error_naming_the_extra(data_root: Path, tmp_path: Path) -> None:
    # sys.modules[name] = None is how Python marks a module as absent: importing it fails, find_spec says None.
    code = (
        "import sys; sys.modules['wandb'] = None; from fmnist_lightning.__main__ import cli; "
        "sys.argv[0] = 'fmnist'; cli()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *cli_overrides(data_root, tmp_path), "logger=wandb"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: logger=wandb needs the wandb package, which is not installed: pip install -e '.[tracking]'"
    )
