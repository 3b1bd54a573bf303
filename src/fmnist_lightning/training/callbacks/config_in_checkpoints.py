"""The run's record: its resolved config inside every checkpoint, and its hyperparameters in the loggers."""

from __future__ import annotations

import socket
from collections.abc import Collection, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard.summary import hparams

from fmnist_lightning.config.run_record import CONFIG_KEY, hparams_from_record, job_hparam_names
from fmnist_lightning.training.provenance import as_markdown


class RunRecord(L.Callback):
    """Stores the run's resolved config (and provenance) in every checkpoint; logs hparams and the
    provenance once at fit start.

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

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1 and self.config.get("provenance") is not None:
            self.config["provenance"]["ranks"] = rank_hosts(trainer)
        self._log_record(trainer)

    @rank_zero_only
    def _log_record(self, trainer: L.Trainer) -> None:
        params = hparams_from_record(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # What TensorBoardLogger.log_hyperparams does, minus logging metric values at step 0,
                # which would put a false first point on the val/acc_best and test/acc curves.
                writer = logger.experiment._get_file_writer()
                experiment, *session = hparams(params, dict.fromkeys(self.hparam_metrics, 0.0))
                writer.add_summary(flag_as_differing(experiment, job_hparam_names(self.config)))
                for summary in session:
                    writer.add_summary(summary)
                if self.config.get("provenance"):
                    logger.experiment.add_text("run/provenance", as_markdown(self.config["provenance"]), global_step=0)
            else:
                logger.log_hyperparams(params)


def rank_hosts(trainer: L.Trainer) -> list[dict[str, Any]]:
    """Where each process of a distributed run runs: its global rank and host (every rank takes part)."""
    import torch.distributed as dist

    here = {"rank": trainer.global_rank, "host": socket.gethostname()}
    if not (dist.is_available() and dist.is_initialized()):
        return [here]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, here)
    return gathered


def flag_as_differing(experiment: Summary, names: Collection[str]) -> Summary:
    """The hparams experiment summary with ``names`` flagged as differing between runs.

    TensorBoard's HPARAMS table lists flagged hparams first and the rest by name, whatever order
    they were logged in (torch flags none, so ``choice/*`` columns came first and ``optim/lr``
    among the last); flagging the job's own overrides opens the table on what a sweep varied.
    """
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment
