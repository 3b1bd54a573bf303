"""One table for a multirun: a row per job, best first, as summary.csv, summary.md and summary.png.

Built from the job directories alone (``.hydra/overrides.yaml``, then ``metrics.json``
or the ``status.json`` a failed job leaves), so it also summarises a sweep that is
still running or was interrupted::

    python -m fmnist_lightning.summarize outputs/multirun/<time>

A job with neither file is ``incomplete`` (still running, or killed). When the sweep
varies ``data.fold``, summary.md and summary_folds.csv add the mean and standard
deviation of the metrics across folds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import OmegaConf

from fmnist_lightning.config.checks import is_number
from fmnist_lightning.config.command_line import override_key
from fmnist_lightning.config.files import HYDRA_OVERRIDES, METRICS_FILE, RUN_FILE, STATUS_FILE, read_run_yaml
from fmnist_lightning.errors import ConfigError, first_line

DEFAULT_METRIC = "val/acc_best"
COMPLETED, PRUNED, FAILED, INCOMPLETE = "completed", "pruned", "failed", "incomplete"
REPORTED_METRICS = ("val/acc_best", "test/acc")
FACTS = ("params", "epochs", "wall_time_s")
MACHINE = ("host", "cpu")


def facts(summary: Summary) -> tuple[str, ...]:
    """The per-job facts shown; where the pruner stopped jobs, the epoch each stopped at."""
    return FACTS + (("pruned_at_epoch",) if summary.count(PRUNED) else ())


FOLD_KEY = "data.fold"
# A job's .hydra/ file cut short or edited by hand: the summary stops on it rather than mislabel the job.
UNREADABLE_JOB_FILE = "restore it from a backup, or move that job's directory out of the sweep to summarise the rest"
# Plotted on a log axis whatever their range: they are swept in factors, not steps.
LOG_SCALE_KEYS = ("lr", "weight_decay")


@dataclass
class Job:
    name: str
    overrides: list[str]
    values: dict[str, Any]
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    # A failure that was bad input (status.json's bad_input): the sweep's exit status follows it.
    bad_input: bool = False
    # Where it ran ({"host": ..., "cpu": ...}), from the job's run.json or its trial.
    machine: dict[str, str] = field(default_factory=dict)
    # Its run directory, when that is not the job's name in the sweep directory (a study's trials).
    run_dir: str = ""

    def score(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        if isinstance(value, (int, float)) and is_number(value) and math.isfinite(value):
            return float(value)
        return None


@dataclass
class Summary:
    sweep_dir: Path
    metric: str
    maximize: bool
    jobs: list[Job]
    swept: list[str]
    written: list[Path] = field(default_factory=list)
    # Show host and CPU in summary.md: always (True), or only where the jobs ran on several machines (None).
    machine: bool | None = None
    title: str = ""

    def heading(self) -> str:
        return self.title or f"Sweep summary: {self.sweep_dir.name}"

    def count(self, status: str) -> int:
        return sum(job.status == status for job in self.jobs)

    def counts_text(self) -> str:
        pruned = f"{self.count(PRUNED)} pruned, " if self.count(PRUNED) else ""
        return (
            f"{len(self.jobs)} jobs: {self.count(COMPLETED)} completed, {pruned}{self.count(FAILED)} failed, "
            f"{self.count(INCOMPLETE)} incomplete"
        )

    def best_text(self) -> str:
        best = self.jobs[0] if self.jobs and self.jobs[0].score(self.metric) is not None else None
        if best is None:
            return f"no job has {self.metric}"
        return (
            f"best {self.metric} {best.score(self.metric):.4f} "
            f"(job {best.name}: {' '.join(swept_overrides(best, self.swept)) or 'no swept values'})"
        )

    def headline(self) -> str:
        return f"{self.counts_text()}; {self.best_text()}"


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``{key: typed value}`` of a job's overrides, parsed by Hydra's own override grammar."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {override.key_or_group: override.value() for override in parsed}


def _read_json(path: Path) -> dict[str, Any]:
    """A job's JSON record; one cut short or edited by hand is bad input naming the file, as its YAML files are."""
    try:
        record = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON ({first_line(exc)}); {UNREADABLE_JOB_FILE}") from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path} holds {type(record).__name__}, not a JSON object; {UNREADABLE_JOB_FILE}")
    return record


def read_job(job_dir: Path) -> Job:
    overrides_file = job_dir / HYDRA_OVERRIDES
    saved = read_run_yaml(overrides_file, list, UNREADABLE_JOB_FILE) if overrides_file.is_file() else []
    overrides = [str(arg) for arg in saved]
    try:
        values = parse_overrides(overrides)
    except HydraException as exc:  # Hydra's grammar refused a line of it
        raise ConfigError(f"{overrides_file} holds {first_line(exc)}; {UNREADABLE_JOB_FILE}") from None
    job = Job(name=job_dir.name, overrides=overrides, values=values, status=INCOMPLETE)
    metrics_file, status_file = job_dir / METRICS_FILE, job_dir / STATUS_FILE
    if metrics_file.is_file():
        job.metrics = _read_json(metrics_file)
        # Stopped early by the Optuna pruner: its results are real, only shorter.
        job.status = PRUNED if job.metrics.get("pruned_at_epoch") is not None else COMPLETED
    # Whichever was written last tells: a failure after metrics.json (e.g. in the report) makes the
    # job failed; a run resumed after a failure and completed is completed.
    if status_file.is_file() and (
        not metrics_file.is_file() or status_file.stat().st_mtime >= metrics_file.stat().st_mtime
    ):
        record = _read_json(status_file)
        job.status = record.get("status", FAILED)
        job.error = record.get("error", "")
        job.bad_input = record.get("bad_input") is True
    run_file = job_dir / RUN_FILE
    if run_file.is_file():
        where = _read_json(run_file).get("machine") or {}
        job.machine = {"host": where.get("hostname", ""), "cpu": where.get("cpu", "")}
    return job


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory (one holding ``.hydra/``) directly under the sweep directory."""
    dirs = [d for d in sweep_dir.iterdir() if d.is_dir() and (d / ".hydra").is_dir()]
    return [read_job(d) for d in sorted(dirs, key=lambda d: _natural_key(d.name))]


def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """Override keys whose value differs between jobs, in the order they first appear."""
    keys = dict.fromkeys(key for job in jobs for key in job.values)
    return [key for key in keys if len({repr(job.values.get(key)) for job in jobs}) > 1]


def swept_overrides(job: Job, swept: Sequence[str]) -> list[str]:
    return [arg for arg in job.overrides if override_key(arg) in swept]


def _job_setting(sweep_dir: Path, jobs: Sequence[Job], file: str, key: str) -> Any:
    for job in jobs:
        path = sweep_dir / job.name / ".hydra" / file
        if path.is_file():
            settings = read_run_yaml(path, dict, UNREADABLE_JOB_FILE)
            value = OmegaConf.select(settings, key, default=None, throw_on_resolution_failure=False)
            if value is not None:
                return value
    return None


def optimized_metric(sweep_dir: Path, jobs: Sequence[Job]) -> str:
    """The sweep's ``optimized_metric`` (the value its jobs return to the sweeper), else val/acc_best."""
    return str(_job_setting(sweep_dir, jobs, "config.yaml", "optimized_metric") or DEFAULT_METRIC)


def maximizes(sweep_dir: Path, jobs: Sequence[Job], metric: str) -> bool:
    """Lower is better for losses and times to an accuracy; else the Optuna sweeper's direction, or higher."""
    if "loss" in metric or metric.startswith(("time_to_acc/", "epoch_to_acc/")):
        return False
    direction = _job_setting(sweep_dir, jobs, "hydra.yaml", "hydra.sweeper.direction")
    if direction is not None:
        return "max" in str(direction).lower()
    return True


def rank(jobs: Sequence[Job], metric: str, maximize: bool) -> list[Job]:
    """Scored jobs best first, then completed jobs without the metric, failed and incomplete ones."""
    order = {COMPLETED: 1, PRUNED: 1, FAILED: 2, INCOMPLETE: 3}

    def key(job: Job) -> tuple[Any, ...]:
        score = job.score(metric)
        if score is not None:
            return (0, -score if maximize else score, _natural_key(job.name))
        return (order.get(job.status, 3), 0.0, _natural_key(job.name))

    return sorted(jobs, key=key)


def metric_columns(metric: str) -> list[str]:
    return [metric] + [m for m in REPORTED_METRICS if m != metric]
