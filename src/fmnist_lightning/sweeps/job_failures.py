"""Jobs of a sweep: a failed job is recorded in its directory and the sweep goes on.

Hydra's basic sweeper re-raises a failed job's exception once its batch has run, which
ends the sweep; the Optuna sweeper instead marks the trial failed and goes on (up to its
``max_failure_rate``). So a job that fails inside a sweep writes ``status.json`` into
its directory and, under the basic sweeper, returns no value instead of raising; under
Optuna it raises, so the trial is stored as failed with the real error.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from fmnist_lightning.config.files import STATUS_FILE, write_json
from fmnist_lightning.errors import FmnistError, failure_status, one_line
from fmnist_lightning.sweeps.study_trial import in_search

log = logging.getLogger(__name__)


def record_failure(output_dir: Path, exc: BaseException) -> str:
    """Write ``status.json`` (failed, the one-line error) into the run's directory; return the line."""
    status = failure_status(exc)
    # Rank zero only: under DDP every rank fails alike, and one file per run is enough.
    rank_zero_only(write_json)(output_dir / STATUS_FILE, status)
    return one_line(exc)


def sweep_job_failed(cfg: DictConfig, exc: Exception) -> None:
    """Record a failed job and let the sweep go on (see the module docstring for why it returns or raises)."""
    line = record_failure(Path(cfg.paths.output_dir), exc)
    if isinstance(exc, FmnistError):
        log.error("Job failed; the sweep goes on: %s", line)
    else:
        log.exception("Job failed; the sweep goes on: %s", line)
    if in_search():  # the Optuna sweeper stores the trial as failed, with this error
        raise exc
    return None
