"""Lightning's model summary of the layers that compute, without the module's metric objects."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary
from torchmetrics import Metric


class NetworkSummary(ModelSummary):
    """``ModelSummary`` (Lightning's table: layer, type, parameters, FLOPs, shapes) without the rows of the
    LightningModule's torchmetrics objects, which hold no parameters and are not part of the network: at
    ``max_depth=1`` they were nine of its eleven rows. Totals are the model's, as Lightning computes them."""

    # Its one argument spelled out (Lightning's **summarize_kwargs go to a table formatter a config has no use
    # for), so that config.checks can refuse a mistyped key, from the source, before Lightning is imported.
    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)

    def _summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
        summary = super()._summary(trainer, pl_module)
        layers = getattr(summary, "_layer_summary", None)  # Lightning 2.6's rows, by layer name
        if isinstance(layers, dict):
            for name in [name for name, row in layers.items() if isinstance(getattr(row, "_module", None), Metric)]:
                del layers[name]
        return summary
