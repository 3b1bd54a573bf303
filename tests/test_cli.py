"""The real CLI, as a subprocess, on tiny budgets: a run's artifacts, multirun and resume."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from conftest import cli_overrides, run_cli
from fmnist_lightning.config.files import project_root

TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
]


def _runs(log_dir: Path) -> list[Path]:
    return sorted(p for p in (log_dir / "runs").iterdir() if p.is_dir())


def test_train_run_writes_checkpoints_events_and_metrics(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    result = run_cli(*cli_overrides(data_root, log_dir), *TINY, "model=tinyvgg", "aug=light")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Test accuracy:" in result.stdout
    (run,) = _runs(log_dir)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("epoch_*.ckpt"))
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "csv" / "metrics.csv").read_text().count("\n") >= 3
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("test/acc", "test/loss", "val/acc", "val/acc_best", "train/loss", "train/acc", "params"):
        assert key in metrics
    assert f"{metrics['test/acc']:.4f}" in result.stdout
    assert_short_console(result, run)
    # The composed config travels in the checkpoint and loads without unpickling code.
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["fmnist_config"]["model"]["name"] == "tinyvgg"
    assert ckpt["fmnist_config"]["choices"]["aug"] == "light"


def console_lines(output: str) -> list[str]:
    """What a terminal shows at the end, progress bars aside (bench/console_lines.py counts the same way)."""
    spec = importlib.util.spec_from_file_location("console_lines", project_root() / "bench" / "console_lines.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.counted(output)[0]


def assert_short_console(result: subprocess.CompletedProcess, run: Path) -> None:
    """A short header, Lightning's banner once, the summary without metric objects; the config in train.log only."""
    shown = console_lines(result.stdout) + console_lines(result.stderr)
    assert len(shown) <= 60, "\n".join(shown)
    header = [
        line
        for line in result.stdout.splitlines()
        if line.split(":")[0] in ("Run directory", "Overrides", "Model", "Data", "Training")
    ] + [line for line in result.stdout.splitlines() if line.startswith("Precision ")]
    assert (
        header[0] == f"Run directory: {run}"
        and header[1].startswith("Overrides: trainer.accelerator=cpu ")
        and header[1].endswith(" model=tinyvgg aug=light")
    ), header
    assert header[2].startswith("Model: tinyvgg (model=tinyvgg), 7,740 parameters, 2.3 MFLOPs"), header
    assert header[3].startswith("Data: 500 train / 100 val / 200 test images, batch 32 (aug=light)"), header
    assert header[4].startswith("Training: AdamW at lr 0.001 (optim=adamw), sched=cosine, 2 epochs"), header
    assert header[5] == "Precision 32-true on 1 cpu device", header
    everything = result.stdout + result.stderr
    assert everything.count("GPU available:") == 1
    assert "Composed config" not in everything and "Composed config" in (run / "train.log").read_text()
    assert "| net " in everything and "MulticlassAccuracy" not in everything
    assert "Trainer already configured" not in everything and "was configured so 100%" not in everything


def test_tensorboard_has_scalars_and_hparams(data_root: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "outputs"
    result = run_cli(*cli_overrides(data_root, log_dir), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _runs(log_dir)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/acc", "test/loss"} <= tags
    assert "lr" in tags  # one learning-rate tag whatever the optimizer (callbacks.LearningRateTag)
    assert "augmentation/preview" in events.Tags()["images"]
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and b"test/acc" in plugins["_hparams_/experiment"]


def test_multirun_gives_each_job_its_own_directory(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    result = run_cli(
        "-m",
        "fmnist_lightning",
        "--multirun",
        *cli_overrides(data_root, log_dir),
        "optim.lr=1e-4,1e-3,1e-2",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (log_dir / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2"]
    lrs = set()
    for job in jobs:
        assert (job / "metrics.json").is_file()
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        lrs.add((job / ".hydra" / "overrides.yaml").read_text())
    assert len(lrs) == 3
    # every job prints the same header as a single run
    assert [line for line in result.stdout.splitlines() if line.startswith("Run directory:")] == [
        f"Run directory: {job}" for job in jobs
    ]


def test_resume_from_checkpoint_continues_training(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    first = run_cli(*cli_overrides(data_root, log_dir), *TINY[1:], "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = _runs(log_dir)
    last = run / "checkpoints" / "last.ckpt"
    second = run_cli(*cli_overrides(data_root, log_dir), *TINY[1:], "trainer.max_epochs=2", f"ckpt_path={last}")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = [p for p in _runs(log_dir) if p != run]
    assert len(resumed) == 1
    metrics = json.loads((resumed[0] / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    # The first run's files are untouched.
    assert last.is_file()


def test_console_script_is_the_same_command(data_root: Path, tmp_path: Path) -> None:
    fmnist = Path(sys.executable).parent / "fmnist"
    result = subprocess.run(
        [str(fmnist), *cli_overrides(data_root, tmp_path / "outputs"), "debug=fast_dev_run"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = _runs(tmp_path / "outputs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert f"Test accuracy: {metrics['test/acc']:.4f}" in result.stdout, result.stdout[-2000:]
