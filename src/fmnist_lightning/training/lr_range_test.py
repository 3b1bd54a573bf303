"""The learning-rate range test behind ``fmnist-lr-find``: checks of its settings, running Lightning's
``Tuner.lr_find`` on the run's own datamodule, model and optimizer, and why a test gave no suggestion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from fmnist_lightning.errors import ConfigError, TrainingError

MODES = ("exponential", "linear")
# Lightning's suggestion skips the first 10 and the last loss and needs two finite ones between.
SKIP_BEGIN, SKIP_END = 10, 1
MIN_STEPS = 20


def lr_override(lr: float) -> str:
    """The suggestion as a command-line override, e.g. ``optim.lr=3.02e-03``."""
    return f"optim.lr={lr:.2e}"


def check_settings(settings: DictConfig) -> None:
    """Refuse an impossible ``lr_find:`` section before anything is built."""
    min_lr, max_lr = settings.min_lr, settings.max_lr
    if not (isinstance(min_lr, (int, float)) and isinstance(max_lr, (int, float)) and 0 < min_lr < max_lr):
        raise ConfigError(
            f"lr_find.min_lr={min_lr} and lr_find.max_lr={max_lr}: need 0 < min_lr < max_lr, "
            "e.g. lr_find.min_lr=1e-6 lr_find.max_lr=1"
        )
    if not isinstance(settings.num_training, int) or settings.num_training < MIN_STEPS:
        raise ConfigError(
            f"lr_find.num_training={settings.num_training}: the suggestion ignores the first "
            f"{SKIP_BEGIN} steps, so take at least {MIN_STEPS}, e.g. lr_find.num_training=100"
        )
    if settings.mode not in MODES:
        raise ConfigError(f"lr_find.mode={settings.mode}: pick one of {', '.join(MODES)}")
    threshold = settings.early_stop_threshold
    if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 1):
        raise ConfigError(
            f"lr_find.early_stop_threshold={threshold}: a multiple of the best loss > 1, "
            "e.g. 4.0, or null to run every step"
        )


def no_suggestion_reason(lrs: list[float], losses: list[float], settings: DictConfig) -> str | None:
    """Why these results give no suggestion (one line saying what to try), or None when they give one."""
    if sum(math.isfinite(loss) for loss in losses[SKIP_BEGIN:-SKIP_END]) >= 2:
        return None
    first_bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if first_bad is not None and first_bad <= SKIP_BEGIN:
        what = (
            f"the training loss was not finite from step {first_bad + 1} (lr {lrs[first_bad]:.2e}); lower "
            f"lr_find.min_lr (now {settings.min_lr:g}), and if the loss is NaN even then, check that the model "
            "trains at all: python -m fmnist_lightning debug=fast_dev_run"
        )
    elif lrs:
        what = (
            f"the loss diverged after {len(losses)} of {settings.num_training} steps (lr {lrs[-1]:.2e} when it "
            f"stopped); lower lr_find.min_lr (now {settings.min_lr:g}) or take more steps with "
            "lr_find.num_training"
        )
    else:
        what = "no training step ran; check trainer.limit_train_batches and the data"
    return f"the learning-rate range test found no suggestion: {what}"


@dataclass
class RangeTest:
    """The smoothed loss at each learning rate tried, and the rate Lightning suggests."""

    lrs: list[float]
    losses: list[float]
    suggestion: float


def run_range_test(cfg: DictConfig, output_dir: Path) -> RangeTest:
    """Build exactly the run's datamodule, backbone, LightningModule and optimizer, and run the range test."""
    # Imported here, so that a bad lr_find value answers without the seconds-long import of Lightning.
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    from fmnist_lightning.training.builders import build
    from fmnist_lightning.training.run_setup import build_module

    settings = cfg.lr_find
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = build(cfg.data, "data", _recursive_=True)
    # Read (and validate) the data first, as training does, so bad data stops here with its own error line.
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_module(cfg)
    # The test's own length, not the run's epochs: max_steps also gives a schedule that plans the
    # whole run (onecycle) a finite length to be built with before Lightning swaps it out.
    trainer: L.Trainer = build(
        cfg.trainer,
        "trainer",
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        max_epochs=-1,
        max_steps=int(settings.num_training),
        default_root_dir=str(output_dir),
    )
    if getattr(trainer, "fast_dev_run", False):  # set by Lightning, not declared on Trainer
        raise ConfigError(
            "fast_dev_run skips the learning-rate range test; drop debug=fast_dev_run / trainer.fast_dev_run"
        )
    if trainer.world_size > 1:
        raise ConfigError(
            f"the range test runs in one process, not {trainer.world_size}: pass trainer.devices=1 "
            "(DDP trains on devices x data.batch_size images a step; test at that data.batch_size)"
        )
    output_dir.mkdir(parents=True, exist_ok=True)  # the finder keeps its temporary checkpoint there
    finder = Tuner(trainer).lr_find(
        module,
        datamodule=datamodule,
        min_lr=float(settings.min_lr),
        max_lr=float(settings.max_lr),
        num_training=int(settings.num_training),
        mode=str(settings.mode),
        early_stop_threshold=settings.early_stop_threshold,
        # The suggestion is printed for the user to pass as optim.lr, not set on a module that is thrown away.
        update_attr=False,
    )
    return read_finder(finder, settings)


def read_finder(finder: Any, settings: DictConfig) -> RangeTest:
    """The range test's curve and suggestion from Lightning's finder, or one line saying why there is none."""
    if finder is None:  # Lightning returns None only under fast_dev_run, refused before the test
        raise TrainingError("the learning-rate range test did not run")
    lrs = [float(x) for x in finder.results["lr"]]
    losses = [float(x) for x in finder.results["loss"]]
    # Checked before asking Lightning, which would log an error line of its own.
    reason = no_suggestion_reason(lrs, losses, settings)
    if reason:
        raise TrainingError(reason)
    suggestion = finder.suggestion(skip_begin=SKIP_BEGIN, skip_end=SKIP_END)
    if suggestion is None:
        raise TrainingError(
            "the learning-rate range test found no steepest descent to suggest; widen lr_find.min_lr/max_lr or take "
            "more steps with lr_find.num_training"
        )
    return RangeTest(lrs, losses, float(suggestion))
