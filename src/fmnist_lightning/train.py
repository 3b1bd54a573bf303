"""``train(cfg)``: build everything from the config, fit, test the best checkpoint, write metrics.json.

Callable from tests with a composed config; ``__main__`` wraps it in ``@hydra.main``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, open_dict

from fmnist_lightning.callbacks import RunRecord
from fmnist_lightning.config import run_record
from fmnist_lightning.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` node of a callbacks/logger group."""
    return [
        instantiate(node, _convert_="all")
        for node in (group or {}).values()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def without_validation(cfg: DictConfig) -> None:
    """Adapt a config whose data has no validation split: keep the last epoch, drop val monitors."""
    with open_dict(cfg):
        cfg.trainer.limit_val_batches = 0
        cfg.trainer.num_sanity_val_steps = 0
        for name in list(cfg.callbacks or {}):
            node = cfg.callbacks[name]
            if not isinstance(node, DictConfig) or not str(node.get("monitor") or "").startswith("val/"):
                continue
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
    output_dir = Path(cfg.paths.output_dir)
    log.info("Run directory: %s", output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = instantiate(cfg.data, _recursive_=True)
    # Read (and validate) the data before anything else, so bad data stops the run at once.
    datamodule.prepare_data()
    datamodule.setup("fit")
    if not datamodule.has_validation:
        log.warning("data.val_size=0: no validation; the last epoch's checkpoint is tested")
        without_validation(cfg)

    net = instantiate(cfg.model)
    module: L.LightningModule = instantiate(cfg.module, net=net)
    info = model_info(module)
    log.info("Model %s: %s parameters, %s FLOPs per image", cfg.model.name, f"{info['params']:,}",
             f"{info['flops_per_image']:,}")

    record = run_record(cfg, model_info=info)
    callbacks = instantiate_group(cfg.get("callbacks"))
    for callback in callbacks:
        if isinstance(callback, RunRecord):
            # Not a constructor argument: Hydra would instantiate the _target_ nodes inside the record.
            callback.config = record
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if not best:
            log.warning("No checkpoint was saved; testing the weights as they are at the end of training")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, weights_only=True if best else None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")})
        metrics["best_model_path"] = best

    metrics.update(info)
    metrics["epochs"] = trainer.current_epoch
    metrics["wall_time_s"] = round(time.perf_counter() - started, 2)
    write_json(output_dir / "metrics.json", metrics)
    if "test/acc" in metrics:
        rank_zero_only(print)(
            f"Test accuracy: {metrics['test/acc']:.4f}  test loss: {metrics['test/loss']:.4f}  "
            f"({metrics['best_model_path'] or 'final weights'}); results in {output_dir}"
        )
    return metrics
