"""A study's summary from its storage alone, on any machine that reaches it::

    python -m fmnist_lightning.summarize --storage postgresql+psycopg://user@db/optuna --study lr_wd

Every trial's job stores, in the trial's user attributes, where it ran (host, CPU, run
directory, overrides) when it starts and its results (``val/acc_best``, ``test/acc``, params,
epochs, wall time, pruned epoch) or its error when it ends (``sweeps.study_trial``). So the
table needs none of the run directories, which may lie on other machines' disks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.errors import FmnistError
from fmnist_lightning.results.summary_writers import write_files
from fmnist_lightning.results.sweep_results import (
    COMPLETED,
    DEFAULT_METRIC,
    FACTS,
    FAILED,
    INCOMPLETE,
    PRUNED,
    REPORTED_METRICS,
    Job,
    Summary,
    rank,
    swept_keys,
)
from fmnist_lightning.sweeps.study_storage import open_storage

if TYPE_CHECKING:
    import optuna


def load_study(url: str, name: str | None) -> optuna.Study:
    """The named study (or the storage's only one); a clear error naming the studies there otherwise."""
    import optuna

    storage = open_storage(url, must_exist=True)
    names = optuna.get_all_study_names(storage)
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        there = ", ".join(names) if names else "none"
        raise FmnistError(f"no study named {name!r} in {mask_text(url)} (studies there: {there}); pass --study <name>")
    return optuna.load_study(study_name=name, storage=storage)


def _status(trial: optuna.trial.FrozenTrial) -> str:
    from optuna.trial import TrialState

    return {TrialState.COMPLETE: COMPLETED, TrialState.PRUNED: PRUNED, TrialState.FAIL: FAILED}.get(
        trial.state, INCOMPLETE
    )


def _error(trial: optuna.trial.FrozenTrial, retried_as: list[int]) -> str:
    if _status(trial) != FAILED:
        return ""
    attrs = trial.user_attrs
    error = attrs.get("error") or attrs.get("not_run") or "no result: its worker died or was stopped"
    return error + (f" (retried as trial {', '.join(map(str, retried_as))})" if retried_as else "")


def trial_job(trial: optuna.trial.FrozenTrial, metric: str, retried_as: list[int]) -> Job:
    """One trial as a row of the summary."""
    attrs = trial.user_attrs
    values = dict(trial.params)
    overrides = [str(arg) for arg in attrs.get("overrides") or [f"{k}={v}" for k, v in values.items()]]
    keys = (metric, *REPORTED_METRICS, *FACTS, "pruned_at_epoch")
    metrics: dict[str, Any] = {key: attrs[key] for key in keys if key in attrs}
    if trial.value is not None and metric not in metrics:
        metrics[metric] = trial.value
    return Job(
        name=f"trial_{trial.number}",
        overrides=overrides,
        values=values,
        status=_status(trial),
        metrics=metrics,
        error=_error(trial, retried_as),
        machine={"host": str(attrs.get("host", "")), "cpu": str(attrs.get("cpu", ""))},
        run_dir=str(attrs.get("run_dir", "")),
    )


def study_summary(url: str, name: str | None, out_dir: Path | None = None, metric: str | None = None) -> Summary:
    """Write summary.csv, .md and .png of the study into ``out_dir`` (default ``outputs/studies/<name>``)."""
    import optuna

    study = load_study(url, name)
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise FmnistError(f"study {study.study_name!r} in {mask_text(url)} has no trials yet")
    metric = metric or next(
        (str(t.user_attrs["optimized_metric"]) for t in trials if "optimized_metric" in t.user_attrs), DEFAULT_METRIC
    )
    if "loss" in metric or metric.startswith(("time_to_acc/", "epoch_to_acc/")):
        maximize = False
    else:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    retries: dict[int, list[int]] = {}
    for trial in trials:
        history = trial.system_attrs.get("retry_history") or []
        if history:
            retries.setdefault(int(history[-1]), []).append(trial.number)
    jobs = [trial_job(t, metric, retries.get(t.number, [])) for t in trials]
    out_dir = Path(out_dir or Path("outputs") / "studies" / study.study_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(
        out_dir,
        metric,
        maximize,
        rank(jobs, metric, maximize),
        swept_keys(jobs),
        machine=True,
        title=f"Study summary: {study.study_name} ({mask_text(url)})",
    )
    return write_files(summary)
