"""Every option of every config group composes and instantiates; the config surface behaves as documented."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import lightning as L
import pytest
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf

from conftest import run_cli
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.models.registry import count_parameters
from fmnist_lightning.train import train
from fmnist_lightning.training.builders import instantiate_group
from fmnist_lightning.training.callbacks.config_in_checkpoints import RunRecord
from fmnist_lightning.training.classifier import ImageClassifier
from fmnist_lightning.training.precision import resolve_precision

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra")
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(make_cfg, group: str, option: str) -> None:
    cfg = make_cfg(f"{group}={option}")
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, L.LightningDataModule)
    net = instantiate(cfg.model)
    module = instantiate(cfg.module, net=net)
    assert isinstance(module, ImageClassifier)
    if OmegaConf.select(cfg, "sched.scheduler.total_steps", default="unset") is None:
        # Sized from the fitting Trainer's estimated_stepping_batches, which exists only inside fit();
        # tests/test_schedulers.py runs that path.
        optimizer = module.optimizer_factory(params=module.parameters())
    else:
        built = module.configure_optimizers()
        optimizer = built["optimizer"] if isinstance(built, dict) else built
    # The optimizer of the config, at its rate (optim=lookahead's target is a function that returns Lookahead).
    target = cfg.optim._target_.rpartition(".")[2]
    assert type(optimizer).__name__ == ("Lookahead" if target == "lookahead" else target)
    assert optimizer.defaults["lr"] == cfg.optim.lr
    callbacks = instantiate_group(cfg.callbacks)
    assert any(isinstance(cb, RunRecord) for cb in callbacks)
    loggers = instantiate_group(cfg.logger, "logger")
    resolve_precision(cfg)  # trainer.precision=auto becomes a Lightning value, as in train()
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    assert isinstance(trainer, L.Trainer)


def test_trainer_config_lists_every_trainer_argument() -> None:
    # So that any Trainer argument can be overridden as trainer.<name>=... without "+".
    listed = set(OmegaConf.load(CONF_DIR / "trainer" / "default.yaml"))
    expected = set(inspect.signature(L.Trainer.__init__).parameters) - {"self", "callbacks", "logger"}
    assert expected <= listed, f"missing from conf/trainer/default.yaml: {sorted(expected - listed)}"


def test_trainer_arguments_override_without_plus(make_cfg) -> None:
    cfg = make_cfg("trainer.limit_train_batches=0.1", "trainer.precision=bf16-mixed", "trainer.accelerator=cpu")
    trainer = instantiate(cfg.trainer)
    assert trainer.limit_train_batches == 0.1
    assert trainer.precision == "bf16-mixed"


def test_experiment_sets_several_groups(make_cfg) -> None:
    cfg = make_cfg("experiment=tinyvgg_baseline")
    assert cfg.model.name == "tinyvgg"
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.optim.lr == 0.1
    assert cfg.data.normalize == "unit" and cfg.sched.scheduler is None
    assert cfg.trainer.max_epochs == 5


def test_command_line_beats_experiment(make_cfg) -> None:
    cfg = make_cfg("experiment=tinyvgg_baseline", "optim.lr=0.02", "trainer.max_epochs=7")
    assert cfg.optim.lr == 0.02 and cfg.trainer.max_epochs == 7


def test_seed_zero_is_honoured(make_cfg) -> None:
    train(make_cfg("seed=0", "debug=fast_dev_run"))
    assert os.environ["PL_GLOBAL_SEED"] == "0"


def test_no_validation_split_tests_last_epoch(make_cfg, tmp_path: Path) -> None:
    metrics = train(make_cfg("data.val_size=0", "trainer.max_epochs=1", "trainer.limit_train_batches=3"))
    assert "val/acc" not in metrics
    assert Path(metrics["best_model_path"]).is_file()
    assert 0.0 <= metrics["test/acc"] <= 1.0


def test_help_lists_groups_and_options() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "fmnist-lightning" in result.stdout
    for line in ("model: ", "aug: ", "optim: ", "sched: ", "debug: ", "experiment: "):
        assert line in result.stdout
    assert "randaugment" in result.stdout and "tinyvgg" in result.stdout
    assert "Powered by Hydra" not in result.stdout  # not Hydra's generic help


def test_checkpoint_callback_monitors_val_acc(make_cfg) -> None:
    cfg = make_cfg()
    best, last = [cb for cb in instantiate_group(cfg.callbacks) if isinstance(cb, ModelCheckpoint)]
    assert best.monitor == "val/acc" and best.mode == "max" and not best.save_last
    # last.ckpt is kept by a callback of its own, every epoch, whatever val/acc does.
    assert last.filename == "last" and last.monitor is None and last.save_top_k == 1


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_one_batch(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}", "debug=fast_dev_run")
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    # metrics.json says whether the test figure includes test-time augmentation.
    assert metrics["test_tta"] is cfg.module.tta


@pytest.mark.parametrize(("aug", "warned"), [("none", True), ("randaugment", True), ("shift_flip", False)])
def test_tta_without_flipped_training_images_is_warned(
    make_cfg, caplog: pytest.LogCaptureFixture, aug: str, warned: bool
) -> None:
    # e.g. experiment=best_small aug=none: the preset's TTA would then lower its accuracy.
    train(make_cfg("module.tta=true", f"aug={aug}", "debug=fast_dev_run"))
    assert ("never flips images horizontally" in caplog.text) is warned


@pytest.mark.parametrize("experiment", ["compact100k", "best_small", "speedrun"])
def test_small_presets_stay_under_100k_parameters(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}")
    # The preset carries the budget, so a wider override fails before training instead of silently growing.
    assert cfg.model.max_params == 100_000
    assert count_parameters(instantiate(cfg.model)) < 100_000
