"""Writing a summary: summary.csv, summary.md, summary.png (and summary_folds.csv), for a sweep directory
or for a study read from its storage (``results.study_results``)."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# No pyplot: the Agg canvas behind a bare Figure needs no display and leaves global state alone.
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from fmnist_lightning.config.checks import is_number
from fmnist_lightning.config.command_line import override_key
from fmnist_lightning.config.files import write_text_atomic
from fmnist_lightning.errors import FmnistError
from fmnist_lightning.results.sweep_results import (
    COMPLETED,
    FOLD_KEY,
    LOG_SCALE_KEYS,
    MACHINE,
    Job,
    Summary,
    facts,
    find_jobs,
    maximizes,
    metric_columns,
    optimized_metric,
    rank,
    swept_keys,
)


def rows(summary: Summary) -> list[dict[str, Any]]:
    out = []
    for job in summary.jobs:
        row: dict[str, Any] = {"job": job.name, "status": job.status}
        # An explicit null (e.g. model.max_params=null) is a value; a key the job did not set is blank.
        row.update(
            {
                key: "null" if key in job.values and job.values[key] is None else job.values.get(key)
                for key in summary.swept
            }
        )
        row.update({m: job.metrics.get(m) for m in metric_columns(summary.metric)})
        row.update({f: job.metrics.get(f) for f in facts(summary)})
        row.update({key: job.machine.get(key) for key in MACHINE})
        if any(j.run_dir for j in summary.jobs):
            row["run_dir"] = job.run_dir
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


def write_markdown(
    summary: Summary, path: Path, table: Sequence[dict[str, Any]], folds: Sequence[dict[str, Any]], plot: Path | None
) -> None:
    common = [
        arg for arg in (summary.jobs[0].overrides if summary.jobs else []) if override_key(arg) not in summary.swept
    ]
    better = "higher" if summary.maximize else "lower"
    lines = [
        f"# {summary.heading()}",
        "",
        f"{summary.counts_text()}. Ranked by `{summary.metric}` ({better} is better); {summary.best_text()}.",
        "",
    ]
    if common:
        lines += [f"Overrides common to all jobs: `{' '.join(common)}`", ""]
    columns = [
        "job",
        "status",
        *summary.swept,
        *metric_columns(summary.metric),
        *facts(summary),
        *machine_columns(summary),
        "error",
    ]
    lines += markdown_table(table, columns)
    if folds:
        fold_columns = list(folds[0])
        lines += [
            "",
            f"## Across folds (`{FOLD_KEY}`)",
            "",
            "Mean and sample standard deviation over the completed folds.",
            "",
        ]
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
    for ax, key in zip(fig.subplots(1, len(keys), squeeze=False)[0], keys, strict=True):
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
    fig.suptitle(
        f"{summary.metric} by swept parameter ({len(scored)} jobs"
        + (f"; {not_shown} failed or unfinished not shown)" if not_shown else ")")
    )
    return fig


def machine_columns(summary: Summary) -> list[str]:
    """host and cpu for summary.md: when asked, or when the jobs ran on more than one machine (summary.csv
    always has them)."""
    machines = {tuple(job.machine.get(key) for key in MACHINE) for job in summary.jobs if job.machine}
    shown = list(MACHINE) if summary.machine or (summary.machine is None and len(machines) > 1) else []
    return shown + (["run_dir"] if any(job.run_dir for job in summary.jobs) else [])


def write_summary(sweep_dir: str | Path, metric: str | None = None, machine: bool | None = None) -> Summary:
    """Read every job of the sweep and write summary.csv, summary.md (and summary.png, summary_folds.csv);
    ``machine=True`` shows each job's host and CPU in summary.md too."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FmnistError(f"{sweep_dir} is not a directory; pass a sweep directory such as outputs/multirun/<time>")
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FmnistError(
            f"no job directories (with .hydra/) in {sweep_dir}; pass a sweep directory, such as outputs/multirun/<time>"
        )
    metric = metric or optimized_metric(sweep_dir, jobs)
    maximize = maximizes(sweep_dir, jobs, metric)
    return write_files(
        Summary(sweep_dir, metric, maximize, rank(jobs, metric, maximize), swept_keys(jobs), machine=machine)
    )


def write_files(summary: Summary) -> Summary:
    """Write the summary's files into ``summary.sweep_dir``; the written paths are in ``summary.written``."""
    sweep_dir = summary.sweep_dir
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
