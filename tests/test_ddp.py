"""Scaling out on this CPU machine: DDP with 2 gloo processes under Hydra, and the GPU-ready switches."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from conftest import cli_overrides, run_cli
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.train import train

# No limit on test batches: the 200 test images split evenly over 2 processes (100 each, one batch),
# so DDP's sampler pads nothing and both runs score exactly the same images.
TINY = ["model=tinyvgg", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def _dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


@pytest.mark.slow
def test_ddp_run_has_one_directory_and_tests_like_one_process(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    result = run_cli(*cli_overrides(data_root, log_dir), *TINY, *DDP)
    assert result.returncode == 0, result.stderr[-3000:]
    # Both ranks ran in the one run directory; only rank 0 printed and wrote the results.
    (run,) = _dirs(log_dir / "runs")
    assert [p.name for p in _dirs(log_dir)] == ["runs"]
    assert result.stdout.count("Test accuracy:") == 1
    output = result.stdout + result.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output and "distributed_backend=gloo" in output
    ddp = json.loads((run / "metrics.json").read_text())
    best = ddp["best_model_path"]
    assert Path(best).parent == run / "checkpoints"

    # One process, same checkpoint, nothing left to train: the test metrics must match.
    single = run_cli(*cli_overrides(data_root, tmp_path / "single"), *TINY, f"ckpt_path={best}")
    assert single.returncode == 0, single.stderr[-3000:]
    (single_run,) = _dirs(tmp_path / "single" / "runs")
    one = json.loads((single_run / "metrics.json").read_text())
    assert one["test/acc"] == ddp["test/acc"]
    assert one["test/f1_macro"] == pytest.approx(ddp["test/f1_macro"], abs=1e-6)
    assert one["test/loss"] == pytest.approx(ddp["test/loss"], rel=1e-5)


@pytest.mark.slow
def test_ddp_job_of_a_multirun_trains_in_its_own_processes(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    result = run_cli(
        "-m",
        "fmnist_lightning",
        "--multirun",
        *cli_overrides(data_root, log_dir),
        *TINY,
        *DDP,
        "optim.lr=1e-3",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Without the relaunch, each extra rank re-runs the whole sweep: more sweep or run directories appear.
    assert [p.name for p in _dirs(log_dir)] == ["multirun"]
    (sweep,) = _dirs(log_dir / "multirun")
    assert [p.name for p in _dirs(sweep)] == ["0"]
    assert result.stdout.count("Test accuracy:") == 1
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert math.isfinite(metrics["test/acc"]) and metrics["epochs"] == 1
    assert "| 0 | completed |" in (sweep / "summary.md").read_text()


def test_bf16_mixed_precision_and_channels_last_run_on_the_cpu(make_cfg: Callable[..., DictConfig]) -> None:
    cfg = make_cfg(*TINY, "trainer.precision=bf16-mixed", "model.channels_last=true", "trainer.limit_test_batches=1")
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/acc"] <= 1
    # What the run used, as its checkpoint keeps it: the precision it ran at, and filters stored NHWC.
    saved = torch.load(metrics["best_model_path"], weights_only=True)
    assert saved["fmnist_config"]["provenance"]["precision"] == "bf16-mixed"
    filters = [w for w in saved["state_dict"].values() if w.dim() == 4]
    assert filters and all(w.is_contiguous(memory_format=torch.channels_last) for w in filters)


def test_compiled_model_trains_on_the_cpu(make_cfg: Callable[..., DictConfig]) -> None:
    metrics = train(make_cfg(*TINY, "model=linear", "model.compile=true", "trainer.limit_test_batches=1"))
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/acc"] <= 1
    # torch.compile really ran: its compile-time counters saw our model's frames.
    from torch._dynamo.utils import counters

    assert counters["stats"]["unique_graphs"] > 0, dict(counters["stats"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: trainer=gpu would train")
def test_gpu_preset_without_a_gpu_is_one_clear_error(make_cfg: Callable[..., DictConfig]) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.accelerator=gpu, but torch \(.*\) sees no CUDA GPU"):
        train(make_cfg(*TINY, "trainer=gpu", "trainer.accelerator=gpu"))
