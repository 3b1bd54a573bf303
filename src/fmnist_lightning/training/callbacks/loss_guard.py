"""Stop training with one clear line once the loss is no longer finite."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from fmnist_lightning.errors import ConfigError, TrainingError


class FiniteLossGuard(L.Callback):
    """Stops training with one clear line once the training loss is NaN or infinite.

    Checked every ``check_every_n_steps`` steps rather than every step: reading the loss
    is a device sync on a GPU, and a non-finite loss poisons the weights, so it stays
    non-finite and is caught at the next check.
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        if check_every_n_steps < 1:
            raise ConfigError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.every = check_every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % self.every:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and not torch.isfinite(loss).all():
            lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})
            raise TrainingError(
                f"the training loss became {float(loss)} at epoch {trainer.current_epoch}, step {trainer.global_step} "
                f"(learning rate {', '.join(f'{lr:g}' for lr in lrs)}); try a lower learning rate, "
                f"e.g. optim.lr={lrs[-1] / 10:g}"
            )
