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

import csv
import io
import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
# No pyplot: the Agg canvas behind a bare Figure needs no display and leaves global state alone.
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from omegaconf import OmegaConf

from fmnist_lightning.config.checks import is_number
from fmnist_lightning.config.files import HYDRA_OVERRIDES, METRICS_FILE, RUN_FILE, STATUS_FILE, write_text_atomic
from fmnist_lightning.errors import FmnistError

DEFAULT_METRIC = "val/acc_best"
COMPLETED, PRUNED, FAILED, INCOMPLETE = "completed", "pruned", "failed", "incomplete"
REPORTED_METRICS = ("val/acc_best", "test/acc")
FACTS = ("params", "epochs", "wall_time_s")
MACHINE = ("host", "cpu")


def facts(summary: Summary) -> tuple[str, ...]:
    """The per-job facts shown; where the pruner stopped jobs, the epoch each stopped at."""
    return FACTS + (("pruned_at_epoch",) if summary.count(PRUNED) else ())
FOLD_KEY = "data.fold"
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
    # Where it ran ({"host": ..., "cpu": ...}), from the job's run.json.
    machine: dict[str, str] = field(default_factory=dict)

    def score(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        if is_number(value) and math.isfinite(value):
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

    def count(self, status: str) -> int:
        return sum(job.status == status for job in self.jobs)

    def counts_text(self) -> str:
        pruned = f"{self.count(PRUNED)} pruned, " if self.count(PRUNED) else ""
        return (f"{len(self.jobs)} jobs: {self.count(COMPLETED)} completed, {pruned}{self.count(FAILED)} failed, "
                f"{self.count(INCOMPLETE)} incomplete")

    def best_text(self) -> str:
        best = self.jobs[0] if self.jobs and self.jobs[0].score(self.metric) is not None else None
        if best is None:
            return f"no job has {self.metric}"
        return (f"best {self.metric} {best.score(self.metric):.4f} "
                f"(job {best.name}: {' '.join(swept_overrides(best, self.swept)) or 'no swept values'})")

    def headline(self) -> str:
        return f"{self.counts_text()}; {self.best_text()}"


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``{key: typed value}`` of a job's overrides, parsed by Hydra's own override grammar."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return {override.key_or_group: override.value() for override in parsed}


def read_job(job_dir: Path) -> Job:
    overrides_file = job_dir / HYDRA_OVERRIDES
    overrides = [str(arg) for arg in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    job = Job(name=job_dir.name, overrides=overrides, values=parse_overrides(overrides), status=INCOMPLETE)
    metrics_file, status_file = job_dir / METRICS_FILE, job_dir / STATUS_FILE
    if metrics_file.is_file():
        job.metrics = json.loads(metrics_file.read_text())
        # Stopped early by the Optuna pruner: its results are real, only shorter.
        job.status = PRUNED if job.metrics.get("pruned_at_epoch") is not None else COMPLETED
    # Whichever was written last tells: a failure after metrics.json (e.g. in the report) makes the
    # job failed; a run resumed after a failure and completed is completed.
    if status_file.is_file() and (not metrics_file.is_file() or status_file.stat().st_mtime >= metrics_file.stat().st_mtime):
        record = json.loads(status_file.read_text())
        job.status = record.get("status", FAILED)
        job.error = record.get("error", "")
    run_file = job_dir / RUN_FILE
    if run_file.is_file():
        where = json.loads(run_file.read_text()).get("machine") or {}
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
    return [arg for arg in job.overrides if arg.lstrip("+~").partition("=")[0] in swept]


def _job_setting(sweep_dir: Path, jobs: Sequence[Job], file: str, key: str) -> Any:
    for job in jobs:
        path = sweep_dir / job.name / ".hydra" / file
        if path.is_file():
            value = OmegaConf.select(OmegaConf.load(path), key, default=None, throw_on_resolution_failure=False)
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


def rows(summary: Summary) -> list[dict[str, Any]]:
    out = []
    for job in summary.jobs:
        row: dict[str, Any] = {"job": job.name, "status": job.status}
        # An explicit null (e.g. model.max_params=null) is a value; a key the job did not set is blank.
        row.update({key: "null" if key in job.values and job.values[key] is None else job.values.get(key)
                    for key in summary.swept})
        row.update({m: job.metrics.get(m) for m in metric_columns(summary.metric)})
        row.update({f: job.metrics.get(f) for f in facts(summary)})
        row.update({key: job.machine.get(key) for key in MACHINE})
        row["overrides"] = " ".join(job.overrides)
        row["error"] = job.error
        out.append(row)
    return out


def fold_rows(summary: Summary) -> list[dict[str, Any]]:
    """Mean and standard deviation across folds, per setting of the other swept values."""
    if FOLD_KEY not in summary.swept:
        return []
    others = [key for key in summary.swept if key != FOLD_KEY]
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in summary.jobs:
        groups.setdefault(tuple(repr(job.values.get(key)) for key in others), []).append(job)
    out = []
    for jobs in groups.values():
        row: dict[str, Any] = {key: jobs[0].values.get(key) for key in others}
        done = [job for job in jobs if job.status == COMPLETED]
        row["folds"] = f"{len(done)}/{len(jobs)}"
        for metric in metric_columns(summary.metric):
            values = [v for v in (job.score(metric) for job in done) if v is not None]
            row[f"{metric} mean"] = statistics.fmean(values) if values else None
            # Sample standard deviation: the folds are a sample of the ways to split the data.
            row[f"{metric} std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(row)
    return out


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if key == "wall_time_s":
            return f"{value:.1f}"
        return f"{value:.4f}" if "/" in key else f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and key == "params":
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def markdown_table(table: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(c, row.get(c)) for c in columns) + " |" for row in table]
    return lines


def write_csv(path: Path, table: Sequence[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(table[0]))
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(path, text.getvalue())


def write_markdown(summary: Summary, path: Path, table: Sequence[dict[str, Any]], folds: Sequence[dict[str, Any]],
                   plot: Path | None) -> None:
    common = [arg for arg in (summary.jobs[0].overrides if summary.jobs else [])
              if arg.lstrip("+~").partition("=")[0] not in summary.swept]
    better = "higher" if summary.maximize else "lower"
    lines = [
        f"# Sweep summary: {summary.sweep_dir.name}",
        "",
        f"{summary.counts_text()}. Ranked by `{summary.metric}` ({better} is better); {summary.best_text()}.",
        "",
    ]
    if common:
        lines += [f"Overrides common to all jobs: `{' '.join(common)}`", ""]
    columns = ["job", "status", *summary.swept, *metric_columns(summary.metric), *facts(summary),
               *machine_columns(summary), "error"]
    lines += markdown_table(table, columns)
    if folds:
        fold_columns = list(folds[0])
        lines += ["", f"## Across folds (`{FOLD_KEY}`)", "",
                  "Mean and sample standard deviation over the completed folds.", ""]
        lines += markdown_table(folds, fold_columns)
    if plot is not None:
        lines += ["", f"![{summary.metric} against each swept parameter]({plot.name})"]
    write_text_atomic(path, "\n".join(lines) + "\n")


def metric_figure(summary: Summary) -> Figure | None:
    """The optimised metric against each swept parameter, one panel each; None when nothing was swept."""
    scored = [job for job in summary.jobs if job.score(summary.metric) is not None]
    keys = [key for key in summary.swept if any(key in job.values for job in scored)]
    if not keys:
        return None
    fig = Figure(figsize=(4.2 * len(keys), 3.6), layout="constrained")
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys):
        points = [(job.values[key], job.score(summary.metric)) for job in scored if key in job.values]
        numeric = all(is_number(x) for x, _ in points)
        # Anything else (model names, null) is a category on the axis.
        points = sorted(points) if numeric else sorted((str(x), y) for x, y in points)
        xs, ys = [x for x, _ in points], [y for _, y in points]
        # One swept parameter: its points form a curve. Several: a cloud, other values vary along it.
        ax.plot(xs, ys, "o-" if len(keys) == 1 else "o", alpha=0.8)
        if numeric and min(xs) > 0 and (key.rsplit(".", 1)[-1] in LOG_SCALE_KEYS or max(xs) / min(xs) >= 100):
            ax.set_xscale("log")
            # Within less than a decade matplotlib labels minor ticks too, and they overlap.
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel(summary.metric)
        ax.grid(True, alpha=0.3)
    not_shown = len(summary.jobs) - len(scored)
    fig.suptitle(f"{summary.metric} by swept parameter ({len(scored)} jobs"
                 + (f"; {not_shown} failed or unfinished not shown)" if not_shown else ")"))
    return fig


def machine_columns(summary: Summary) -> list[str]:
    """host and cpu for summary.md: when asked, or when the jobs ran on more than one machine (summary.csv
    always has them)."""
    machines = {tuple(job.machine.get(key) for key in MACHINE) for job in summary.jobs if job.machine}
    return list(MACHINE) if summary.machine or (summary.machine is None and len(machines) > 1) else []


def write_summary(sweep_dir: str | Path, metric: str | None = None, machine: bool | None = None) -> Summary:
    """Read every job of the sweep and write summary.csv, summary.md (and summary.png, summary_folds.csv);
    ``machine=True`` shows each job's host and CPU in summary.md too."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FmnistError(f"{sweep_dir} is not a directory; pass a sweep directory such as outputs/multirun/<time>")
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FmnistError(f"no job directories (with .hydra/) in {sweep_dir}; pass a sweep directory, "
                          "such as outputs/multirun/<time>")
    metric = metric or optimized_metric(sweep_dir, jobs)
    maximize = maximizes(sweep_dir, jobs, metric)
    summary = Summary(sweep_dir, metric, maximize, rank(jobs, metric, maximize), swept_keys(jobs), machine=machine)
    table = rows(summary)
    folds = fold_rows(summary)
    write_csv(sweep_dir / "summary.csv", table)
    summary.written.append(sweep_dir / "summary.csv")
    if folds:
        write_csv(sweep_dir / "summary_folds.csv", folds)
        summary.written.append(sweep_dir / "summary_folds.csv")
    fig = metric_figure(summary)
    plot = None
    if fig is not None:
        plot = sweep_dir / "summary.png"
        fig.savefig(plot, dpi=110)
        summary.written.append(plot)
    write_markdown(summary, sweep_dir / "summary.md", table, folds, plot)
    summary.written.append(sweep_dir / "summary.md")
    return summary
