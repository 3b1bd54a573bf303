"""Torch's random state in checkpoints, so a resumed run makes the draws an uninterrupted one makes."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class RngState(L.Callback):
    """Saves torch's random state in checkpoints and restores it when a resumed fit starts training.

    Augmentation draws and dropout come from torch's global generator (the batch
    order does not: see ``data.loaders.EpochShuffle``), so a run resumed from an end-of-epoch
    checkpoint makes the same draws as an uninterrupted one and, with
    ``trainer.deterministic=true``, ends identical. The state is applied at
    ``on_train_start``, after the fit-start callbacks (which draw an augmentation
    preview) and right before the first resumed batch.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is None:
            return
        torch.set_rng_state(self.pending["torch"])
        if "cuda" in self.pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.pending["cuda"])
        self.pending = None
