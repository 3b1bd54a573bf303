"""``train(cfg)``: build everything from the config, fit, test the best checkpoint, write metrics.json and the report.

Callable from tests with a composed config; ``__main__`` wraps it in ``@hydra.main``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, open_dict

from fmnist_lightning.callbacks import EMA, OptunaPruning, RunClock, RunRecord, best_checkpoint
from fmnist_lightning.config import check_values, run_record
from fmnist_lightning.distributed import relaunches_command, run_in_own_process
from fmnist_lightning.errors import CheckpointError, ConfigError
from fmnist_lightning.hardware import resolve_precision
from fmnist_lightning.module import fill_missing_accumulators
from fmnist_lightning.report import write_training_report

log = logging.getLogger(__name__)

MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
RUN_CLOCK = f"{RunClock.__module__}.{RunClock.__name__}"


def build(node: Any, what: str, **kwargs: Any) -> Any:
    """``instantiate`` with a constructor's complaint about a config value turned into one ConfigError line."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]
        raise ConfigError(f"cannot build {what} from the config ({reason.splitlines()[0]}); check its {what}.* values") from exc


def instantiate_group(group: DictConfig | None, what: str = "callbacks") -> list[Any]:
    """Instantiate every ``_target_`` node of a callbacks/logger group."""
    return [
        build(node, f"{what}.{name}", _convert_="all")
        for name, node in (group or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def check_resume_checkpoint(path: str, module: L.LightningModule, cfg: DictConfig) -> None:
    """Refuse a checkpoint that cannot continue this config's model, before the Trainer tries to load it."""
    from fmnist_lightning.restore import load_checkpoint, run_config

    checkpoint = load_checkpoint(path)
    expected = module.state_dict()
    stored = checkpoint["state_dict"]
    fill_missing_accumulators(module, stored)
    mismatched = sorted(
        k for k in expected.keys() | stored.keys()
        if k not in expected or k not in stored or expected[k].shape != stored[k].shape
    )
    if mismatched:
        trained = run_config(checkpoint).get("choices", {}).get("model", "another model")
        raise CheckpointError(
            f"{path} holds a {trained} model whose weights do not fit this run's model={cfg.model.name} "
            f"({len(mismatched)} tensors differ, e.g. {mismatched[0]}); pass the options the checkpoint was "
            "trained with, or resume=<run dir> to reuse its config"
        )


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
    if cfg.sched.get("scheduler") and "ReduceLROnPlateau" in str(cfg.sched.scheduler.get("_target_")):
        raise ConfigError("sched=plateau needs validation metrics but data.val_size=0; pick another sched")


def model_info(module: L.LightningModule) -> dict[str, int]:
    """Parameters and forward FLOPs for one image (Lightning's summary counts them with torch's FlopCounterMode)."""
    summary = ModelSummary(module, max_depth=0)
    return {"params": int(summary.total_parameters), "flops_per_image": int(summary.total_flops)}


@rank_zero_only
def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and (optionally) test one configuration; return the final metrics."""
    started = time.perf_counter()
    check_values(cfg)
    resolve_precision(cfg)
    output_dir = Path(cfg.paths.output_dir)
    log.info("Run directory: %s", output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = build(cfg.data, "data", _recursive_=True)
    # Read (and validate) the data before anything else, so bad data stops the run at once.
    datamodule.prepare_data()
    datamodule.setup("fit")
    if not datamodule.has_validation:
        log.warning("data.val_size=0: no validation; the last epoch's checkpoint is tested")
        without_validation(cfg)

    augmentation = getattr(datamodule, "augmentation", None)
    if cfg.module.get("tta") and not getattr(augmentation, "flips_horizontally", False):
        log.warning("module.tta=true tests each image with its mirror image, but the training augmentation (aug=) "
                    "never flips images horizontally: expect a lower test accuracy than with module.tta=false")
    net = build(cfg.model, "model")
    module: L.LightningModule = build(cfg.module, "module", net=net)
    info = model_info(module)
    log.info("Model %s: %s parameters, %s FLOPs per image", cfg.model.name, f"{info['params']:,}",
             f"{info['flops_per_image']:,}")

    record = run_record(cfg, model_info=info)
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    clock = pruning = ema = None
    for callback in callbacks:
        if isinstance(callback, RunRecord):
            # Not a constructor argument: Hydra would instantiate the _target_ nodes inside the record.
            callback.config = record
        elif isinstance(callback, RunClock):
            callback.started, clock = started, callback
        elif isinstance(callback, OptunaPruning):
            pruning = callback
        elif isinstance(callback, EMA):
            ema = callback
    loggers = instantiate_group(cfg.get("logger"), "logger")
    if not loggers:
        # LearningRateMonitor refuses to run without a logger; with logger=none there is nothing to monitor into.
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    if relaunches_command(trainer):
        return run_in_own_process(output_dir)

    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        check_resume_checkpoint(ckpt_path, module, cfg)
    # weights_only: resuming never runs code stored in a checkpoint file.
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        checkpoint = best_checkpoint(trainer)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if not best:
            log.warning("No checkpoint was saved; testing the weights as they are at the end of training")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True if best else None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        metrics["best_model_path"] = best
        # Which predictions test/acc is of: with TTA, each image's averaged with its mirror image's.
        metrics["test_tta"] = bool(getattr(module, "tta", False))

    metrics.update(info)
    metrics["epochs"] = trainer.current_epoch
    if ema is not None:
        # The checkpoints, val/* and test/* are of the averaged weights.
        metrics["ema_decay"] = ema.decay
    # The resume guard compares it with last.ckpt's: equal means these results are of the finished run.
    metrics["global_step"] = trainer.global_step
    if clock is not None:
        metrics.update(clock.metrics())
    if pruning is not None and pruning.pruned_at_epoch is not None:
        metrics["pruned_at_epoch"] = pruning.pruned_at_epoch
    metrics["wall_time_s"] = round(clock.elapsed() if clock is not None else time.perf_counter() - started, 2)
    write_json(output_dir / "metrics.json", metrics)
    if "test/acc" in metrics:
        rank_zero_only(print)(
            f"Test accuracy: {metrics['test/acc']:.4f}  test loss: {metrics['test/loss']:.4f}  "
            f"({metrics['best_model_path'] or 'final weights'}); results in {output_dir}"
        )
    # Last, so that nothing in the report can cost the run its checkpoints or metrics.json.
    if cfg.get("report", True):
        write_training_report(trainer, module, datamodule, record, metrics, output_dir)
    return metrics
