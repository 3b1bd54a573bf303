"""Which checkpoint is the best one, and a last checkpoint saved when a run is interrupted."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from fmnist_lightning.config.files import LAST_CHECKPOINT_NAME


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint that keeps the best model (``callbacks.model_checkpoint``), not the one keeping last.ckpt."""
    kept = [
        cb
        for cb in trainer.checkpoint_callbacks
        if isinstance(cb, ModelCheckpoint) and cb.filename != LAST_CHECKPOINT_NAME
    ]
    return kept[0] if kept else None


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C or SIGTERM, finishes the current batch, saves ``last.ckpt`` and says how to resume.

    Lightning turns SIGTERM into ``SIGTERMException`` after the current batch. Ctrl-C, as
    Python delivers it, raises ``KeyboardInterrupt`` at whatever line the main thread is on:
    inside the TensorBoard writer's queue too, whose ``flush`` at shutdown then waits forever
    for an item that was never announced. So while training runs, the first Ctrl-C asks for
    the same stop as SIGTERM; a second one interrupts at once, as in any Python program.
    Both reach ``on_exception``. Other exceptions (bugs, bad input, a NaN loss) save nothing:
    their state is not worth resuming. The file is written by the Trainer's checkpoint IO,
    which saves atomically.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning installs its SIGTERM handler just before this hook and restores the
        # handlers it found (SIGINT's included) when fit ends. A handler other than Python's
        # own (a shell's SIG_IGN for background jobs, a notebook's) is left alone.
        if threading.current_thread() is not threading.main_thread():
            return
        stop_after_batch = signal.getsignal(signal.SIGTERM)
        _stop_before_requeue(stop_after_batch)
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler or not callable(stop_after_batch):
            return

        def first_ctrl_c(signum: int, frame: FrameType | None) -> None:
            global _stopped_by
            signal.signal(signal.SIGINT, signal.default_int_handler)
            _stopped_by = signal.SIGINT
            rank_zero_only(print)(
                "Ctrl-C: stopping after this batch (press Ctrl-C again to stop at once)", file=sys.stderr, flush=True
            )
            stop_after_batch(signum, frame)

        signal.signal(signal.SIGINT, first_ctrl_c)

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


def submitit_requeue_signal() -> int | None:
    """The signal SLURM sends a job that hydra-submitit-launcher submitted before its time limit (sbatch
    --signal, USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise), or None outside such a job."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def _stop_before_requeue(stop_after_batch: object) -> None:
    """In a submitit job, the time-limit signal first stops training after the current batch.

    submitit's own handler requeues the job and exits at once, from whatever line training is on:
    the epoch under way would be lost, and an exit inside a logger's writer can hang. So during fit
    the signal asks for Lightning's SIGTERM stop (the checkpoint is saved in ``on_exception``);
    ``requeue_if_asked`` then hands the signal to submitit's handler, which Lightning has restored.
    """
    requeue = submitit_requeue_signal()
    if requeue is None or not callable(signal.getsignal(requeue)) or not callable(stop_after_batch):
        return

    def stop_then_requeue(signum: int, frame: FrameType | None) -> None:
        global _stopped_by
        _stopped_by = signum
        rank_zero_only(print)(
            f"{signal.Signals(signum).name} from SLURM (time limit or preemption): stopping "
            "after this batch; the job is requeued and goes on from its last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        stop_after_batch(signum, frame)

    signal.signal(requeue, stop_then_requeue)


# Which signal stopped the run: Ctrl-C reaches the entry point as Lightning's SIGTERMException too.
_stopped_by: int = signal.SIGTERM


def stop_signal_name() -> str:
    """The name of the signal that stopped the run (SIGTERM, SIGINT, or the scheduler's requeue signal)."""
    return signal.Signals(_stopped_by).name


def requeue_if_asked() -> None:
    """After a stop asked by submitit's requeue signal: that signal again, now to submitit's handler (requeue, exit)."""
    if _stopped_by == submitit_requeue_signal():
        signal.raise_signal(_stopped_by)


def interrupted_exit_code() -> int:
    """The shell's status for a run stopped by a signal: 130 after Ctrl-C, 143 after SIGTERM."""
    return 128 + _stopped_by
