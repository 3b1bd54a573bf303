"""Every run records where it came from: the code's commit (and uncommitted changes), the packages, the
machine, the precision, the command line and its times; in run.json, the checkpoints, report.md,
TensorBoard and exported files. And each message reaches the console once, without advertisements."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import cli_overrides, run_cli
from fmnist_lightning.config.files import project_root
from fmnist_lightning.training.provenance import cpu_model

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A throwaway git checkout of the project's code and configs, with one uncommitted change."""
    repo = tmp_path_factory.mktemp("checkout")
    for name in ("src", "conf"):
        shutil.copytree(project_root() / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(project_root() / "pyproject.toml", repo)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "the code that made the run")
    head = _git(repo, "rev-parse", "HEAD").strip()
    with (repo / "conf" / "config.yaml").open("a") as fh:
        fh.write("# an uncommitted change\n")
    return repo, head


def _run_from(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(repo / "src"), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True, timeout=240, env=env)


@pytest.fixture(scope="module")
def recorded_run(checkout: tuple[Path, str], data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo, _ = checkout
    log_dir = tmp_path_factory.mktemp("runs")
    result = _run_from(
        repo, "fmnist_lightning", *cli_overrides(data_root, log_dir, figures=True), *TINY, "optim.lr=0.002"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()
    return run


def test_run_json_records_code_packages_machine_precision_and_times(
    recorded_run: Path, checkout: tuple[Path, str]
) -> None:
    repo, head = checkout
    record = json.loads((recorded_run / "run.json").read_text())
    assert record["code"]["commit"] == head
    assert record["code"]["dirty"] is True and "conf/config.yaml" in record["code"]["changed_files"]
    assert Path(record["code"]["checkout"]).resolve() == repo.resolve()
    assert record["packages"]["torch"] == metadata.version("torch")
    assert record["packages"]["lightning"] == metadata.version("lightning")
    assert record["machine"]["cpu"] == cpu_model() and record["machine"]["cores"] == os.cpu_count()
    assert record["machine"]["gpu_count"] == torch.cuda.device_count()
    assert record["precision"] == "32-true"  # trainer.precision=auto would be resolved here
    assert "optim.lr=0.002" in record["overrides"] and "optim.lr=0.002" in record["argv"]
    assert record["started"] <= record["ended"]


def test_checkpoints_report_and_tensorboard_carry_it(recorded_run: Path, checkout: tuple[Path, str]) -> None:
    _, head = checkout
    checkpoint = torch.load(recorded_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["fmnist_config"]["provenance"]["code"]["commit"] == head
    report = (recorded_run / "report.md").read_text()
    assert "## Provenance of the training run" in report
    assert f"{head[:12]} with uncommitted changes" in report and cpu_model() in report
    events = EventAccumulator(str(recorded_run / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    (text,) = [t for t in events.Tags()["tensors"] if t.startswith("run/provenance")]
    assert head[:12] in events.Tensors(text)[0].tensor_proto.string_val[0].decode()


def test_exports_name_the_source_runs_commit_and_precision(
    recorded_run: Path, checkout: tuple[Path, str], data_root: Path, tmp_path: Path
) -> None:
    repo, head = checkout
    result = _run_from(
        repo,
        "fmnist_lightning.export",
        f"ckpt_path={recorded_run / 'checkpoints' / 'last.ckpt'}",
        f"data_root={data_root}",
        f"out={tmp_path}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    source = json.loads((tmp_path / "export.json").read_text())["metadata"]["source_run"]
    assert source["commit"] == head and source["dirty"] is True and source["precision"] == "32-true"


def test_each_message_once_and_no_advertisement(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(*cli_overrides(data_root, tmp_path), "debug=fast_dev_run")
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    (run,) = (tmp_path / "runs").iterdir()
    for text in (console, (run / "train.log").read_text()):
        assert "litlogger" not in text
        # Lightning's own console handler prints "INFO: <message>"; through Hydra's, each message is one line.
        assert sum("GPU available:" in line for line in text.splitlines()) == 1
        assert not [line for line in text.splitlines() if line.startswith("INFO: ")]
