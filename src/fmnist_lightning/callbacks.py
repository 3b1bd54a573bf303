"""Lightning callbacks that record a run: its config inside checkpoints, and hparams for TensorBoard."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams

from fmnist_lightning.config import hparams_from_record

CONFIG_KEY = "fmnist_config"


class RunRecord(L.Callback):
    """Stores the run's resolved config in every checkpoint and logs hparams once at fit start.

    The config in the checkpoint is what evaluate, predict and resume rebuild the
    model from, so a checkpoint needs no separate YAML. The hparams summary names
    the metrics that compare runs; TensorBoard reads their values from the
    scalars the run logs, so no placeholder values are written.
    """

    def __init__(self, hparam_metrics: Sequence[str] = (), config: dict[str, Any] | None = None) -> None:
        self.config = config or {}
        self.hparam_metrics = list(hparam_metrics)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = hparams_from_record(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # What TensorBoardLogger.log_hyperparams does, minus logging metric values at step 0,
                # which would put a false first point on the val/acc_best and test/acc curves.
                writer = logger.experiment._get_file_writer()
                for summary in hparams(params, dict.fromkeys(self.hparam_metrics, 0.0)):
                    writer.add_summary(summary)
            else:
                logger.log_hyperparams(params)


class AugmentationPreview(L.Callback):
    """Logs a grid of training images and their augmented draws to TensorBoard when training starts."""

    def __init__(self, n_draws: int = 7) -> None:
        self.n_draws = n_draws

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not hasattr(datamodule, "preview"):
            return
        grid = datamodule.preview(n_draws=self.n_draws)
        for logger in loggers:
            logger.experiment.add_image("augmentation/preview", grid, global_step=trainer.global_step)
