"""A training run's parts, assembled from the composed config: datamodule, backbone, LightningModule,
callbacks, loggers and Trainer; then fitting, testing the best checkpoint, and the run's final metrics."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, open_dict

from fmnist_lightning.config.checks import is_int
from fmnist_lightning.config.files import FILE_ONLY
from fmnist_lightning.config.run_names import name_tracker_runs
from fmnist_lightning.config.run_record import hydra_choices, run_record
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.fashion_mnist import NUM_CLASSES
from fmnist_lightning.errors import ConfigError, FmnistError, typed_line
from fmnist_lightning.training.builders import build, instantiate_group, model_info
from fmnist_lightning.training.callbacks.config_in_checkpoints import RunRecord
from fmnist_lightning.training.callbacks.ema import EMA
from fmnist_lightning.training.callbacks.interrupt_checkpoint import best_checkpoint
from fmnist_lightning.training.callbacks.optuna_pruning import OptunaPruning
from fmnist_lightning.training.callbacks.run_clock import RunClock
from fmnist_lightning.training.checkpoint_files import check_fits
from fmnist_lightning.training.classifier import ImageClassifier

log = logging.getLogger(__name__)

MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
RUN_CLOCK = f"{RunClock.__module__}.{RunClock.__name__}"


def without_validation(cfg: DictConfig) -> None:
    """Adapt a config whose data has no validation split: keep the last epoch, drop val monitors."""
    with open_dict(cfg):
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        for name in list(cfg.callbacks or {}):
            node = cfg.callbacks[name]
            if not isinstance(node, DictConfig) or not str(node.get("monitor") or "").startswith("val/"):
                continue
            if node.get("_target_") == RUN_CLOCK:
                continue  # still times the run; no val/acc, so no time-to-accuracy
            if node.get("_target_") == MODEL_CHECKPOINT:
                node.monitor = None
            else:
                log.warning("data.val_size=0: dropping callback %s, which monitors %s", name, node.monitor)
                del cfg.callbacks[name]


@dataclass
class Run:
    """The built parts of one training run, and the callbacks whose results end up in metrics.json."""

    datamodule: FashionMNISTDataModule
    module: ImageClassifier
    trainer: L.Trainer
    record: dict[str, Any]
    info: dict[str, int]
    clock: RunClock | None = None
    pruning: OptunaPruning | None = None
    ema: EMA | None = None

    def final_metrics(self, started: float) -> dict[str, Any]:
        """Model size, epochs, steps, times to accuracy, pruning and wall time, for metrics.json."""
        metrics: dict[str, Any] = {**self.info, "epochs": self.trainer.current_epoch}
        if self.ema is not None:
            # The checkpoints, val/* and test/* are of the averaged weights.
            metrics["ema_decay"] = self.ema.decay
        # The resume guard compares it with last.ckpt's: equal means these results are of the finished run.
        metrics["global_step"] = self.trainer.global_step
        if self.clock is not None:
            metrics.update(self.clock.metrics())
        if self.pruning is not None and self.pruning.pruned_at_epoch is not None:
            metrics["pruned_at_epoch"] = self.pruning.pruned_at_epoch
        elapsed = self.clock.elapsed() if self.clock is not None else time.perf_counter() - started
        metrics["wall_time_s"] = round(elapsed, 2)
        return metrics


def build_datamodule(cfg: DictConfig) -> FashionMNISTDataModule:
    """The run's datamodule, its data read and validated, so bad data stops the run before anything else."""
    datamodule: FashionMNISTDataModule = build(cfg.data, "data", _recursive_=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.try_transforms()
    if not datamodule.has_validation:
        log.warning("data.val_size=0: no validation; the last epoch's checkpoint is tested")
        without_validation(cfg)
    augmentation = getattr(datamodule, "augmentation", None)
    if cfg.module.get("tta") and not getattr(augmentation, "flips_horizontally", False):
        log.warning(
            "module.tta=true tests each image with its mirror image, but the training augmentation (aug=) "
            "never flips images horizontally: expect a lower test accuracy than with module.tta=false"
        )
    return datamodule


def build_module(cfg: DictConfig, net: Any = None) -> ImageClassifier:
    """The LightningModule around the configured backbone (or ``net``), its optimizer and scheduler built once as a
    check: a combination that cannot work is refused with one line before any data is read."""
    classes = cfg.module.get("num_classes")
    if not is_int(classes) or classes != NUM_CLASSES:
        raise ConfigError(
            f"module.num_classes={classes!r} is impossible: Fashion-MNIST has {NUM_CLASSES} classes (labels "
            f"0-{NUM_CLASSES - 1}), as the models' heads have; leave it at module.num_classes={NUM_CLASSES}"
        )
    module: ImageClassifier = build(cfg.module, "module", net=net if net is not None else build(cfg.model, "model"))
    try:
        module.optimization()
    except FmnistError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        choices = ", ".join(f"{g}={c}" for g, c in hydra_choices(("optim", "sched")).items())
        raise ConfigError(
            f"the optimizer and scheduler cannot be built for this model{f' ({choices})' if choices else ''}: "
            f"{typed_line(exc)}; check the optim.*, sched.* and module.param_groups.* values"
        ) from exc
    return module


def assemble(cfg: DictConfig, started: float, origin: dict[str, Any] | None = None) -> Run:
    """Build every part of the run from the config; the run clock counts from ``started``; ``origin`` (the
    run's provenance) is stored with the config in every checkpoint."""
    # The model, optimizer and scheduler first: a combination that cannot work stops the run before its data
    # is read. (Reading the data draws nothing from the global random state, so the weights are the same.)
    module = build_module(cfg)
    datamodule = build_datamodule(cfg)
    info = model_info(module)
    log.info(
        "Model %s: %s parameters, %s FLOPs per image",
        cfg.model.name,
        f"{info['params']:,}",
        f"{info['flops_per_image']:,}",
        extra=FILE_ONLY,
    )
    record = run_record(cfg, model_info=info, **({"provenance": origin} if origin else {}))
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    for callback in callbacks:
        if isinstance(callback, RunRecord):
            # Not a constructor argument: Hydra would instantiate the _target_ nodes inside the record.
            callback.config = record
        elif isinstance(callback, RunClock):
            callback.started = started
    # Each tracker run named for its job (a sweep's jobs apart, grouped by their sweep).
    loggers = instantiate_group(name_tracker_runs(cfg.get("logger"), str(cfg.paths.output_dir)), "logger")
    if not loggers:
        # LearningRateMonitor refuses to run without a logger; with logger=none there is nothing to monitor into.
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    return Run(
        datamodule,
        module,
        trainer,
        record,
        info,
        clock=_first(callbacks, RunClock),
        pruning=_first(callbacks, OptunaPruning),
        ema=_first(callbacks, EMA),
    )


def _first(callbacks: list[Any], kind: type) -> Any:
    return next((cb for cb in callbacks if isinstance(cb, kind)), None)


def check_checkpoint_fits(run: Run, ckpt_path: str | None, model_name: str, output_dir: Path | None = None) -> None:
    """Refuse a ``ckpt_path`` whose weights do not fit the run's model, before the run's header is printed. A
    ``ckpt_path`` inside ``output_dir`` is the run's own, continued by ``resume=``."""
    if ckpt_path:
        resuming = output_dir is not None and Path(ckpt_path).resolve().is_relative_to(output_dir.resolve())
        check_fits(ckpt_path, run.module, model_name, resuming=resuming)


def fit(run: Run, ckpt_path: str | None) -> dict[str, float]:
    """Fit (resuming from ``ckpt_path`` when given, checked by ``check_checkpoint_fits``); the metrics the fit ended
    with."""
    # weights_only: resuming never runs code stored in a checkpoint file.
    run.trainer.fit(
        run.module, datamodule=run.datamodule, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None
    )
    return {k: float(v) for k, v in run.trainer.callback_metrics.items()}


def best_checkpoint_path(trainer: L.Trainer) -> str:
    """The best checkpoint's file ('' when none was saved)."""
    checkpoint = best_checkpoint(trainer)
    return checkpoint.best_model_path if checkpoint is not None else ""


def test_best(run: Run, best: str) -> dict[str, Any]:
    """Test the best checkpoint (the final weights if none was saved); the test metrics."""
    if not best:
        log.warning("No checkpoint was saved; testing the weights as they are at the end of training")
    run.trainer.test(run.module, datamodule=run.datamodule, ckpt_path=best or None, weights_only=True if best else None)
    metrics: dict[str, Any] = {k: float(v) for k, v in run.trainer.callback_metrics.items() if k.startswith("test/")}
    metrics["best_model_path"] = best
    # Which predictions test/acc is of: with TTA, each image's averaged with its mirror image's.
    metrics["test_tta"] = bool(getattr(run.module, "tta", False))
    return metrics
