"""An exponential moving average of the weights, validated, checkpointed and tested in their place."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn

from fmnist_lightning.errors import ConfigError


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, with the stored average kept when a checkpoint is tested.

    Lightning validates with the averaged weights, saves them as the checkpoint's ``state_dict`` (the raw
    weights go to ``current_model_state``, to resume from) and copies them into the module when training
    ends. But ``trainer.test(ckpt_path=...)`` after ``fit`` also calls this callback's
    ``on_load_checkpoint``, whose parent then loads the raw weights over the average: the best checkpoint
    would be tested with weights other than those it was chosen by. Outside fitting, the ``state_dict``
    the Trainer has just loaded (the average) is what is evaluated.
    """

    # Lightning's arguments spelled out (its **kwargs go to torch's AveragedModel, which a config has no
    # use for), so that a mistyped key is refused before the run starts (config.checks).
    def __init__(
        self,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        use_buffers: bool = True,
        device: torch.device | str | int | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be between 0 and 1 (exclusive), got {decay}")
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
        )
        self.decay = decay

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    # During validation the parent swaps the average into the module and the raw weights into its
    # AveragedModel. A checkpoint saved then (Ctrl-C or SIGTERM mid-validation: InterruptCheckpoint)
    # would get the two the wrong way round, and resume would train on from the average.
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self.swapped = self._average_model is not None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        self.swapped = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if getattr(self, "swapped", False) and "current_model_state" in checkpoint:
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"],
                checkpoint["state_dict"],
            )
