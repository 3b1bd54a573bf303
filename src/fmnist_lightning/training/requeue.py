"""A job that its scheduler starts again goes on where its last attempt stopped, and ``run.json`` lists every attempt.

SLURM starts a requeued job again with the same command and, for a sweep's job, the same job
directory (hydra-submitit-launcher pickles both). When that directory holds the job's earlier
attempt, ``continue_in_place`` makes this attempt a resume of it: from the run's last
checkpoint (the one written when SLURM's SIGTERM or the time-limit signal stopped it after a
batch), or, when the earlier attempt finished, no training at all: its metrics are the job's
result. An attempt that stopped before its first checkpoint has nothing to continue from; its
files go to ``attempts/<n>/`` and the job starts over. A single run started with ``sbatch
--requeue`` gets the same from ``resume=auto`` (``training.resume``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from fmnist_lightning.config.files import METRICS_FILE, RUN_FILE
from fmnist_lightning.config.processes import is_first_task, scheduler_restarts
from fmnist_lightning.training.provenance import now
from fmnist_lightning.training.resume import (
    ATTEMPTS,
    finished_message,
    has_checkpoint,
    readable_checkpoint,
    set_aside,
)

log = logging.getLogger(__name__)

# This attempt's own files, written by Hydra before the job runs: they stay where they are.
THIS_ATTEMPT = (".hydra", "train.log", ATTEMPTS)


def _say(message: str) -> None:
    log.info("%s", message)
    print(message, file=sys.stderr, flush=True)


def continue_in_place(cfg: DictConfig) -> dict[str, Any] | None:
    """For a job its scheduler started again: set ``cfg.ckpt_path`` to the earlier attempt's last checkpoint,
    or return that attempt's metrics when it finished (the job is not run again). None: train as configured."""
    if not scheduler_restarts() or cfg.get("ckpt_path"):
        return None
    run = Path(cfg.paths.output_dir)
    earlier = [p for p in run.iterdir() if p.name not in THIS_ATTEMPT] if run.is_dir() else []
    if not earlier:
        return None
    restart = f"SLURM job {os.environ.get('SLURM_JOB_ID', '?')}, start {scheduler_restarts() + 1}"
    metrics_file = run / METRICS_FILE
    if not has_checkpoint(run):
        if metrics_file.is_file():
            _say(f"{restart}: {run} is complete (it has {METRICS_FILE}); not training it again")
            return json.loads(metrics_file.read_text())
        if is_first_task():
            moved = set_aside(run, keep=THIS_ATTEMPT)
            _say(
                f"{restart}: the last attempt stopped before its first checkpoint; its files are kept in "
                f"{moved}, and the run starts over"
            )
        return None
    checkpoint = readable_checkpoint(run)
    if finished_message(run, checkpoint, ()) is not None:
        _say(f"{restart}: {run} is complete; not training it again")
        return json.loads(metrics_file.read_text())
    with open_dict(cfg):
        cfg.ckpt_path = str(checkpoint)
    _say(f"{restart}: continuing the run in {run} from {checkpoint}")
    return None


def _earlier_attempts(record: dict[str, Any], files: str | None = None) -> list[dict[str, Any]]:
    attempts = record.get("attempts")
    if not attempts:
        attempts = [
            {
                "host": (record.get("machine") or {}).get("hostname"),
                "started": record.get("started"),
                "ended": record.get("ended"),
            }
        ]
    return [{**a, "files": files} if files else a for a in attempts]


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def attempts(run: Path, started: str, ckpt_path: str | None) -> list[dict[str, Any]]:
    """Every attempt of the run in ``run``: the earlier ones (from its ``run.json`` when this attempt continues
    the run from one of its own checkpoints, from ``attempts/<n>/run.json`` for those set aside) and this one."""
    history: list[dict[str, Any]] = []
    for kept in sorted((run / ATTEMPTS).glob("*/" + RUN_FILE), key=lambda p: int(p.parent.name)):
        record = _read(kept)
        if record is not None:
            history += _earlier_attempts(record, files=str(kept.parent.relative_to(run)))
    resumed_in_place = ckpt_path is not None and Path(ckpt_path).resolve().is_relative_to(run.resolve())
    record = _read(run / RUN_FILE) if resumed_in_place else None
    if record is not None:
        history += [a for a in _earlier_attempts(record) if not a.get("files")]
    this: dict[str, Any] = {"host": socket.gethostname(), "started": started, "ended": None}
    if os.environ.get("SLURM_JOB_ID"):
        this |= {"slurm_job_id": os.environ["SLURM_JOB_ID"], "slurm_restarts": scheduler_restarts()}
    if ckpt_path:
        this["resumed_from"] = str(ckpt_path)
    return [*history, this]


def end_attempt(record: dict[str, Any], stopped_by: str | None = None) -> None:
    """Mark the record's current attempt ended now (``stopped_by``: the signal that stopped it, if any)."""
    current = (record.get("attempts") or [{}])[-1]
    current["ended"] = now()
    if stopped_by:
        current["stopped_by"] = stopped_by
