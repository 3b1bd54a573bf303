"""Report to this job's Optuna trial and stop when its pruner says so (``hparams_search=...``)."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from fmnist_lightning.errors import first_line
from fmnist_lightning.sweeps.study_trial import StudyTrial

log = logging.getLogger(__name__)


class OptunaPruning(L.Callback):
    """Reports ``monitor`` to this job's Optuna trial at every validation and stops training if the pruner says so.

    Active only in a trial of ``hydra/sweeper=optuna``, whose sweeper names the storage, study
    and trial in environment variables (set through ``hydra.job.env_set``, so any launcher
    passes them on). A pruned run stops like a finished one: it tests its best checkpoint and
    writes its metrics, with ``pruned_at_epoch``; the sweeper then tells the study PRUNED.
    Unlike optuna-integration's callback, it does not raise ``TrialPruned``, which would end the
    run as a failure without its results.
    """

    def __init__(self, monitor: str = "val/acc_best") -> None:
        self.monitor = monitor
        self.trial: Any = None
        self.pruned_at_epoch: int | None = None

    def connect(self, trial_env: dict[str, str] | None = None) -> None:
        """Find this job's trial, if the sweeper started it as one."""
        from hydra.core.hydra_config import HydraConfig

        link = StudyTrial.from_env(trial_env)
        if link is None:
            return
        from hydra.utils import instantiate

        from fmnist_lightning.config.hydra_compat import ALLOWED

        pruner_cfg = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
        self.trial = link.trial(instantiate(pruner_cfg, **ALLOWED) if pruner_cfg else None)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None and trainer.is_global_zero:
            try:
                self.connect()
            except Exception as exc:  # noqa: BLE001 - the storage is unreachable: train without pruning
                log.warning("Optuna pruning off for this run: %s", first_line(exc))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if self.trial is None or trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch + 1
        try:
            self.trial.report(float(value), step=epoch)
            prune = self.trial.should_prune()
        except Exception as exc:  # noqa: BLE001 - a database restarting, or the trial failed by another worker
            # The run goes on and ends with its results; only pruning stops.
            log.warning("Optuna pruning off from epoch %d: %s", epoch, first_line(exc))
            self.trial = None
            return
        if prune:
            self.pruned_at_epoch = epoch
            trainer.should_stop = True
            rank_zero_only(print)(
                f"Optuna trial {self.trial.number} pruned after epoch {epoch} ({self.monitor} {float(value):.4f})",
                flush=True,
            )
