"""ema=default: Lightning's EMAWeightAveraging; the average is what is validated, checkpointed, tested,
evaluated and resumed."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import open_dict

from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.evaluate import evaluate
from fmnist_lightning.train import train
from fmnist_lightning.training import checkpoint_files
from test_resume import COMPARED, EXACT

# A short average (about 3 steps), so 8 steps leave it well apart from the raw weights.
EMA = ["ema=default", "callbacks.ema.decay=0.7"]
TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=4", "seed=3"]


def _test_loss(module: L.LightningModule, cfg_data_root: Path, checkpoint: dict) -> float:
    datamodule = checkpoint_files.datamodule_from_config(
        checkpoint_files.run_config(checkpoint), root=str(cfg_data_root)
    )
    tester = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    (tested,) = tester.test(module, datamodule=datamodule, verbose=False)
    return tested["test/loss"]


def test_checkpoint_test_and_evaluate_use_the_average(make_cfg, data_root: Path, tmp_path: Path) -> None:
    metrics = train(make_cfg(*EMA, *TINY))
    assert metrics["ema_decay"] == 0.7
    checkpoint = checkpoint_files.load_checkpoint(metrics["best_model_path"])
    # The checkpoint holds both: the average as its state_dict, the raw weights to resume from.
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    weights = [k for k in average if k.startswith("net.") and average[k].is_floating_point()]
    assert weights and any(not torch.equal(average[k], raw[k]) for k in weights)

    # The run's test/loss is the average's, not the raw weights'.
    module = checkpoint_files.module_from_checkpoint(checkpoint)
    assert _test_loss(module, data_root, checkpoint) == pytest.approx(metrics["test/loss"], abs=1e-5)
    module.load_state_dict(raw)
    assert _test_loss(module, data_root, checkpoint) != pytest.approx(metrics["test/loss"], abs=1e-5)

    # evaluate (and so predict and export, which load the same way) reproduces the run's test figures.
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(
            config_name="evaluate", overrides=[f"ckpt_path={metrics['best_model_path']}", f"data_root={data_root}"]
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "evaluate")
    evaluated = evaluate(cfg)
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_resume_continues_the_average_exactly(make_cfg, tmp_path: Path) -> None:
    uninterrupted = train(make_cfg(*EXACT, *EMA, output_dir=tmp_path / "straight"))
    run = tmp_path / "run"
    with pytest.raises(SIGTERMException):
        train(make_cfg(*EXACT, *EMA, "+callbacks.sigterm._target_=test_resume.SigtermAt", "+callbacks.sigterm.step=10"))
    last = run / "checkpoints" / "last.ckpt"
    stopped = torch.load(last, weights_only=True)
    assert stopped["global_step"] == 10 and "current_model_state" in stopped
    resumed = train(make_cfg(*EXACT, *EMA, f"ckpt_path={last}"))
    assert {k: resumed[k] for k in COMPARED} == {k: uninterrupted[k] for k in COMPARED}
    ends = [torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (tmp_path / "straight", run)]
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert ends[0][key].keys() == ends[1][key].keys()
        for name in ends[0][key]:
            torch.testing.assert_close(ends[1][key][name], ends[0][key][name], rtol=0, atol=0, msg=f"{key}/{name}")


class SigtermInValidation(L.Callback):
    """Keeps a copy of the weights being validated (the average), then sends this process a SIGTERM."""

    made: ClassVar[list[SigtermInValidation]] = []  # train() builds it from the config; the test reads it back here

    def __init__(self) -> None:
        SigtermInValidation.made.append(self)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if not trainer.sanity_checking:
            self.validated = {k: v.clone() for k, v in pl_module.state_dict().items()}
            os.kill(os.getpid(), signal.SIGTERM)


def test_interrupt_during_validation_keeps_the_average_as_the_average(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        *EMA, *TINY, "trainer.limit_val_batches=2", "+callbacks.sigterm._target_=test_ema.SigtermInValidation"
    )
    with pytest.raises(SIGTERMException):
        train(cfg)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    killer = SigtermInValidation.made[-1]
    weights = [k for k in killer.validated if k.startswith("net.") and killer.validated[k].is_floating_point()]
    for name in weights:  # the module held the average when the signal came
        torch.testing.assert_close(saved["state_dict"][name], killer.validated[name], rtol=0, atol=0)
    assert any(not torch.equal(saved["current_model_state"][k], killer.validated[k]) for k in weights)


def test_bad_decay_is_one_config_error(make_cfg) -> None:
    with pytest.raises(ConfigError, match=r"callbacks\.ema\.decay must be between 0 and 1"):
        train(make_cfg("ema=default", "callbacks.ema.decay=1.5", *TINY))
