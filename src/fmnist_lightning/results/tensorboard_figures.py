"""TensorBoard images beyond the scalars: the augmentation preview, confusion matrices, per-class accuracy,
sample test predictions. Callbacks of the training run that draw results, so they live with the figures."""

from __future__ import annotations

from typing import Any, cast

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from fmnist_lightning.results.figures import confusion_matrix_figure, per_class_accuracy_figure, prediction_grid_figure
from fmnist_lightning.results.split_metrics import per_class_accuracy


class AugmentationPreview(L.Callback):
    """Logs a grid of training images and their augmented draws to TensorBoard when training starts."""

    def __init__(self, n_draws: int = 7) -> None:
        self.n_draws = n_draws

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: Any = getattr(trainer, "datamodule", None)  # set by Lightning while fitting, not declared
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not hasattr(datamodule, "preview"):
            return
        grid = datamodule.preview(n_draws=self.n_draws)
        for logger in loggers:
            logger.experiment.add_image("augmentation/preview", grid, global_step=trainer.global_step)


class EvaluationFigures(L.Callback):
    """TensorBoard figures with class names: confusion matrices, per-class accuracy, sample test predictions.

    Validation figures are logged whenever ``val/acc_best`` improves, so the last ones
    logged belong to the best epoch; test figures when testing ends. The matrices come
    from the module's torchmetrics ``val_confmat``/``test_confmat``, whose ``compute()``
    syncs over processes and so runs on every rank; only rank zero draws.
    """

    def __init__(self, n_samples: int = 32, monitor: str = "val/acc_best") -> None:
        self.n_samples = n_samples
        self.monitor = monitor
        self.best: float | None = None
        self.samples: tuple[Tensor, Tensor, Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "val_confmat"):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or (self.best is not None and float(value) <= self.best):
            return
        self.best = float(value)
        self._log_matrix(trainer, "val", cast(Any, pl_module).val_confmat.compute())

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or self.n_samples <= 0:
            return
        # The first test batch, predicted again by the module as it tests (TTA included).
        images, labels = batch[0][: self.n_samples], batch[1][: self.n_samples]
        self.samples = (images.cpu(), labels.cpu(), cast(Any, pl_module).predict_proba(images).cpu())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "test_confmat"):
            return
        self._log_matrix(trainer, "test", cast(Any, pl_module).test_confmat.compute())
        if self.samples is not None:
            self._log_samples(trainer, *self.samples)

    @staticmethod
    def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    @rank_zero_only
    def _log_matrix(self, trainer: L.Trainer, stage: str, confmat: Tensor) -> None:
        where = "validation" if stage == "val" else "test"
        epoch = f", epoch {trainer.current_epoch + 1}" if stage == "val" else ""
        for logger in self._tensorboards(trainer):
            figures = {
                f"{stage}/confusion_matrix": confusion_matrix_figure(
                    confmat, True, f"Confusion matrix, {where}{epoch}"
                ),
                f"{stage}/per_class_accuracy": per_class_accuracy_figure(
                    per_class_accuracy(confmat), f"Per-class accuracy, {where}{epoch}"
                ),
            }
            for tag, figure in figures.items():
                logger.experiment.add_figure(tag, figure, global_step=trainer.global_step)

    @rank_zero_only
    def _log_samples(self, trainer: L.Trainer, images: Tensor, labels: Tensor, probs: Tensor) -> None:
        for logger in self._tensorboards(trainer):
            figure = prediction_grid_figure(images, labels, probs, title="Sample test predictions (mistakes in red)")
            logger.experiment.add_figure("test/predictions", figure, global_step=trainer.global_step)
