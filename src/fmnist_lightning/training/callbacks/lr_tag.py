"""One learning-rate tag (``lr``) in the logs, whatever the optimizer, so runs share one chart."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor

from fmnist_lightning.training.classifier import LR_TAG


class LearningRateTag(LearningRateMonitor):
    """Lightning's LearningRateMonitor, logging a single optimizer's learning rate as ``lr``.

    Lightning names the tag after the optimizer class when no scheduler names it (``lr-SGD``,
    ``lr-AdamW``), so runs with different optimizers land on different TensorBoard charts.
    (With a scheduler, ``ImageClassifier`` names it ``lr`` in its scheduler config.)
    """

    def _find_names_from_optimizers(
        self, optimizers: list[Any], *args: Any, **kwargs: Any
    ) -> tuple[list[list[str]], list[Any]]:
        names, found = super()._find_names_from_optimizers(optimizers, *args, **kwargs)
        if len(names) == 1 and len(names[0]) == 1:
            names = [[LR_TAG]]
        return names, found
