"""Which checkpoint is the best one, and a last checkpoint saved when a run is interrupted."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_lightning.config.files import LAST_CHECKPOINT_NAME


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint that keeps the best model (``callbacks.model_checkpoint``), not the one keeping last.ckpt."""
    kept = [cb for cb in trainer.checkpoint_callbacks if cb.filename != LAST_CHECKPOINT_NAME]
    return kept[0] if kept else None



class InterruptCheckpoint(L.Callback):
    """On Ctrl-C or SIGTERM, saves ``last.ckpt`` and says how to resume.

    Lightning turns SIGTERM into ``SIGTERMException`` after the current batch and
    Ctrl-C into ``KeyboardInterrupt``; both reach ``on_exception``. Other exceptions
    (bugs, bad input, a NaN loss) save nothing: their state is not worth resuming.
    The file is written by the Trainer's checkpoint IO, which saves atomically.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path)
        run_dir = self.path.parent.parent
        rank_zero_only(print)(
            f"Interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path}. "
            f"Resume with: python -m fmnist_lightning resume={run_dir}",
            file=sys.stderr,
            flush=True,
        )

