"""The Optuna trial a job of ``hparams_search=...`` runs for, seen from the job.

The sweeper names the storage, study and trial in environment variables (through
``hydra.job.env_set``, so any launcher on any machine passes them on). While the job runs it
records a heartbeat for its trial through the storage, so that a worker on any machine can tell
a dead job from a slow one; it stores where it ran (host, run directory) when it starts and its
results (or its error) when it ends, so that the study alone says what happened
(``python -m fmnist_lightning.summarize --storage <url> --study <name>``, optuna-dashboard).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fmnist_lightning.config.masking import mask_values
from fmnist_lightning.config.run_record import job_overrides
from fmnist_lightning.errors import first_line, one_line
from fmnist_lightning.sweeps.study_storage import Heartbeats, HeartbeatStorage, open_storage

# Where the sweeper (hydra_plugins.fmnist_optuna_sweeper, through hydra.job.env_set) tells a trial's job its storage,
# study, trial id and heartbeat interval. Defined here, on the job's side: the package never imports its Hydra adapter.
TRIAL_ENV = {
    "storage": "FMNIST_OPTUNA_STORAGE",
    "study": "FMNIST_OPTUNA_STUDY",
    "trial": "FMNIST_OPTUNA_TRIAL",
    "heartbeat": "FMNIST_OPTUNA_HEARTBEAT",
}

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

log = logging.getLogger(__name__)

# What a job stores in its trial's user attributes when it ends (those it has).
RESULT_KEYS = ("val/acc_best", "test/acc", "params", "epochs", "wall_time_s", "pruned_at_epoch")


@lru_cache(maxsize=4)
def shared_storage(url: str) -> BaseStorage:
    """One storage per URL and process: the jobs a launcher runs one after another in one process, and the
    heartbeat, pruning and results of each, share its connections (a journal is read once, not per job)."""
    # must_exist: a job that names the file from another directory must not start an empty study of its own.
    return open_storage(url, must_exist=True)


@dataclass
class StudyTrial:
    storage_url: str
    study_name: str
    trial_id: int
    heartbeat_interval: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StudyTrial | None:
        """This job's trial, or None outside an Optuna search (or in one whose study has no storage)."""
        source: Mapping[str, str] = os.environ if env is None else env
        found = {key: source.get(name, "") for key, name in TRIAL_ENV.items()}
        if not (found["storage"] and found["study"] and found["trial"]):
            return None
        interval = float(found["heartbeat"]) if found.get("heartbeat") else None
        return cls(found["storage"], found["study"], int(found["trial"]), interval)

    @property
    def storage(self) -> BaseStorage:
        return shared_storage(self.storage_url)

    def study(self, pruner: Any = None) -> optuna.Study:
        import optuna

        return optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=pruner)

    def trial(self, pruner: Any = None) -> optuna.Trial:
        import optuna

        return optuna.trial.Trial(self.study(pruner), self.trial_id)

    def set_attrs(self, attrs: dict[str, Any]) -> None:
        """Store ``attrs`` in the trial, masked: the storage is a file or a shared database that every dashboard
        reads, and an override or an error may quote a tracker's password."""
        for key, value in mask_values(attrs).items():
            if value is not None:
                self.storage.set_trial_user_attr(self.trial_id, key, value)

    def record_results(self, metrics: dict[str, Any], optimized_metric: str | None) -> None:
        """Store the job's results in its trial (logged, not raised, if the storage is unreachable)."""
        try:
            self.set_attrs(result_attrs(metrics, optimized_metric))
        except Exception as exc:  # noqa: BLE001 - the run's own files hold the results too
            log.warning("Could not store trial %d's results: %s", self.trial_id, first_line(exc))


def started_attrs(output_dir: Path, cpu: str | None = None) -> dict[str, Any]:
    """Where the trial's job runs: host, CPU (the caller's reading of it), run directory, overrides."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "run_dir": str(output_dir.resolve()),
        "overrides": job_overrides(),
    }


def result_attrs(metrics: dict[str, Any], optimized_metric: str | None) -> dict[str, Any]:
    keys = RESULT_KEYS + ((optimized_metric,) if optimized_metric and optimized_metric not in RESULT_KEYS else ())
    attrs = {key: metrics[key] for key in keys if isinstance(metrics.get(key), (int, float, str))}
    attrs["status"] = "pruned" if metrics.get("pruned_at_epoch") is not None else "completed"
    if optimized_metric:
        attrs["optimized_metric"] = optimized_metric
    return attrs


def in_search() -> bool:
    """Whether this job is a trial of an Optuna search (the sweeper told it its trial through the environment)."""
    return bool(os.environ.get(TRIAL_ENV["trial"]))


@contextmanager
def reporting_trial(output_dir: Path, cpu: str | None = None) -> Iterator[StudyTrial | None]:
    """For the job's lifetime: its trial's heartbeat, and where it ran; on an exception, the error too.

    Yields the trial (None outside an Optuna search); the caller stores the results with
    ``result_attrs``. Storage trouble is logged, never fatal: the training itself is the job."""
    from lightning.pytorch.utilities import rank_zero_only

    link = StudyTrial.from_env() if getattr(rank_zero_only, "rank", 0) == 0 else None  # Lightning sets .rank
    if link is None:
        yield None
        return
    try:
        link.set_attrs(started_attrs(output_dir, cpu))
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.warning("Could not store where trial %d runs: %s", link.trial_id, first_line(exc))
    beats = (
        Heartbeats(cast(HeartbeatStorage, link.storage), [link.trial_id], link.heartbeat_interval)
        if link.heartbeat_interval
        else nullcontext()
    )
    with beats:
        try:
            yield link
        except BaseException as exc:
            try:
                link.set_attrs(
                    {"status": "failed", "error": one_line(exc) if isinstance(exc, Exception) else type(exc).__name__}
                )
            except Exception as store_exc:  # noqa: BLE001 - the job's own error is the one to raise
                log.warning("Could not store trial %d's error: %s", link.trial_id, first_line(store_exc))
            raise
