"""Sweeps through the real CLI: summaries, a failing job, joblib and submitit launchers, Optuna searches."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from conftest import cli_overrides, run_cli
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.results.summary_writers import metric_figure, write_summary
from fmnist_lightning.results.sweep_results import find_jobs

TINY = [
    "model=linear",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")


def needs(plugin: str) -> None:
    pytest.importorskip(f"hydra_plugins.{plugin}", reason="needs the [sweeps] extra: pip install -e '.[sweeps]'")


def multirun(data_root: Path, log_dir: Path, *args: str) -> Path:
    """Run ``python -m fmnist_lightning -m ...`` to completion; return its sweep directory."""
    result = run_cli("-m", "fmnist_lightning", "--multirun", *cli_overrides(data_root, log_dir), *TINY, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (log_dir / "multirun").iterdir()
    return sweep


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def lr_sweep(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 3-job learning-rate sweep, shared by the tests that read its summary."""
    return multirun(data_root, tmp_path_factory.mktemp("lr_sweep"), "optim.lr=1e-4,1e-3,1e-1")


def test_lr_sweep_summary_has_one_row_per_job_best_first(lr_sweep: Path) -> None:
    for name in SUMMARY_FILES:
        assert (lr_sweep / name).is_file(), name
    assert (lr_sweep / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = summary_rows(lr_sweep)
    assert sorted(row["job"] for row in rows) == ["0", "1", "2"]
    for row in rows:
        metrics = json.loads((lr_sweep / row["job"] / "metrics.json").read_text())
        assert row["status"] == "completed"
        assert float(row["val/acc_best"]) == pytest.approx(metrics["val/acc_best"])
        assert float(row["test/acc"]) == pytest.approx(metrics["test/acc"])
        assert int(row["params"]) == metrics["params"] and int(row["epochs"]) == metrics["epochs"]
        assert float(row["wall_time_s"]) == pytest.approx(metrics["wall_time_s"])
        assert f"optim.lr={row['optim.lr']}" in row["overrides"].split()
    scores = [float(row["val/acc_best"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert {float(row["optim.lr"]) for row in rows} == {1e-4, 1e-3, 1e-1}
    markdown = (lr_sweep / "summary.md").read_text()
    assert "| job | status | optim.lr | val/acc_best | test/acc | params | epochs | wall_time_s |" in markdown
    assert markdown.count("| completed |") == 3 and "![val/acc_best" in markdown


def test_summary_plot_puts_learning_rates_on_a_log_axis(lr_sweep: Path) -> None:
    summary = write_summary(lr_sweep)
    figure = metric_figure(summary)
    assert figure is not None
    (axes,) = [ax for ax in figure.axes if ax.get_xlabel() == "optim.lr"]
    assert axes.get_xscale() == "log" and axes.get_ylabel() == "val/acc_best"
    assert len(axes.lines[0].get_xdata()) == 3


def test_a_second_sweep_never_writes_into_an_earlier_sweeps_directory(
    lr_sweep: Path, data_root: Path, tmp_path: Path
) -> None:
    before = {p: p.read_bytes() for p in lr_sweep.rglob("*") if p.is_file()}
    result = run_cli(
        "-m",
        "fmnist_lightning",
        "--multirun",
        *cli_overrides(data_root, tmp_path),
        *TINY,
        f"hydra.sweep.dir={lr_sweep}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {lr_sweep} already holds a sweep")
    assert {p: p.read_bytes() for p in lr_sweep.rglob("*") if p.is_file()} == before


def test_summarize_cli_rebuilds_an_interrupted_sweep(lr_sweep: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "interrupted"
    shutil.copytree(lr_sweep, sweep, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "summary*"))
    # As if the sweep was killed while job 2 trained: it has its .hydra but no results yet.
    (sweep / "2" / "metrics.json").unlink()
    result = run_cli("-m", "fmnist_lightning.summarize", str(sweep))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in SUMMARY_FILES:
        assert (sweep / name).is_file(), name
    status = {row["job"]: row["status"] for row in summary_rows(sweep)}
    assert status == {"0": "completed", "1": "completed", "2": "incomplete"}
    assert "3 jobs: 2 completed, 0 failed, 1 incomplete" in result.stdout
    # The unfinished job is listed last.
    assert summary_rows(sweep)[-1]["job"] == "2"


def test_summarize_cli_names_a_job_file_cut_short_and_writes_nothing(lr_sweep: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "cut"
    shutil.copytree(lr_sweep, sweep, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "summary*"))
    damaged = sweep / "1" / ".hydra" / "overrides.yaml"
    damaged.write_text(damaged.read_text()[:-1] + "\n- [model=lenet\n")  # a list left open, as by a hand edit
    result = run_cli("-m", "fmnist_lightning.summarize", str(sweep))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {damaged} is not valid YAML (line ")
    assert line.endswith("move that job's directory out of the sweep to summarise the rest")
    assert not list(sweep.glob("summary*"))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        ("metrics.json", "is not valid JSON ("),
        (".hydra/overrides.yaml", "holds Error parsing override 'x'"),
    ],
)
def test_summarize_cli_names_a_job_record_it_cannot_read_and_writes_nothing(
    lr_sweep: Path, tmp_path: Path, damage: str, said: str
) -> None:
    sweep = tmp_path / "damaged"
    shutil.copytree(lr_sweep, sweep, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", "summary*"))
    damaged = sweep / "1" / damage
    # A record cut short, or a line a hand edit left that Hydra's grammar cannot read.
    damaged.write_text(damaged.read_text()[:20] if damage.endswith(".json") else "- x\n")
    result = run_cli("-m", "fmnist_lightning.summarize", str(sweep))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {damaged} {said}") and line.endswith("to summarise the rest"), line
    assert not list(sweep.glob("summary*"))


def test_summarize_cli_rejects_a_directory_without_jobs(tmp_path: Path) -> None:
    result = run_cli("-m", "fmnist_lightning.summarize", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: no job directories")


def test_failing_job_is_marked_failed_and_the_sweep_goes_on(data_root: Path, tmp_path: Path) -> None:
    # model.max_params=10 refuses the 7,850-parameter linear model before training: a real, deterministic failure.
    sweep = multirun(data_root, tmp_path / "outputs", "model.max_params=10,100000")
    by_budget = {row["model.max_params"]: row for row in summary_rows(sweep)}
    failed, completed = by_budget["10"], by_budget["100000"]
    assert failed["status"] == "failed" and "model.max_params=10" in failed["error"]
    assert completed["status"] == "completed" and completed["val/acc_best"]
    record = json.loads((sweep / failed["job"] / "status.json").read_text())
    assert record["status"] == "failed" and record["error_type"] == "ConfigError" and record["bad_input"] is True
    assert not (sweep / failed["job"] / "metrics.json").exists()
    assert "1 failed" in (sweep / "summary.md").read_text()


def test_a_sweep_none_of_whose_jobs_completes_ends_with_one_error_line(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    result = run_cli("--multirun", *cli_overrides(data_root, log_dir), *TINY, "data.batch_size=0,-3")
    # Every job's failure was bad input: exit 2, the first job's reason, and the summary that lists them all.
    (sweep,) = (log_dir / "multirun").iterdir()
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: every job of the sweep failed (2); the first, job 0: data.batch_size=0 is impossible: it must be a "
        f"batch size >= 1, e.g. data.batch_size=64 (all of them in {sweep / 'summary.md'})"
    )
    assert [row["status"] for row in summary_rows(sweep)] == ["failed", "failed"]


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_in_their_own_directories(data_root: Path, tmp_path: Path) -> None:
    needs("hydra_joblib_launcher")
    sweep = multirun(
        data_root, tmp_path / "outputs", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim.lr=1e-3,1e-2"
    )
    jobs = find_jobs(sweep)
    assert [job.name for job in jobs] == ["0", "1"]
    assert {job.values["optim.lr"] for job in jobs} == {1e-3, 1e-2}
    for job in jobs:
        assert job.status == "completed"
        # Each job's checkpoints and logs stay in its own directory.
        assert json.loads((sweep / job.name / "metrics.json").read_text())["best_model_path"].startswith(
            str(sweep / job.name)
        )
        assert list((sweep / job.name / "tensorboard").glob("events.out.tfevents.*"))
    assert [row["status"] for row in summary_rows(sweep)] == ["completed", "completed"]


@pytest.mark.slow
def test_submitit_local_runs_each_job_as_a_submitit_job(data_root: Path, tmp_path: Path) -> None:
    needs("hydra_submitit_launcher")
    sweep = multirun(data_root, tmp_path / "outputs", "hydra/launcher=submitit_local", "optim.lr=1e-3,1e-2")
    assert [row["status"] for row in summary_rows(sweep)] == ["completed", "completed"]
    # submitit's own records (pickled job, its stdout/stderr) of each job.
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2


def test_slurm_preset_takes_one_task_per_device() -> None:
    needs("hydra_submitit_launcher")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
        )
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == 4 and launcher.nodes == 2


@pytest.mark.slow
def test_optuna_search_is_resumed_and_extended_from_its_sqlite_study(data_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="needs the [sweeps] extra: pip install -e '.[sweeps]'")
    import optuna

    log_dir = tmp_path / "outputs"
    # No pruning here: this test is about storing, resuming and extending every trial to its end.
    sweep = multirun(
        data_root, log_dir, "hparams_search=lr_wd", "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=none"
    )
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.load_study(study_name="lr_wd", storage=storage)
    assert len(study.trials) == 2
    results = OmegaConf.to_container(OmegaConf.load(sweep / "optimization_results.yaml"))
    assert results["trials"]["complete"] == 2 and results["best_value"] == study.best_value, results
    assert results["best_params"] == study.best_trial.params

    # Resumed in the same directory with 2 more trials, then extended with a trial that fails.
    again = multirun(
        data_root,
        log_dir,
        "hparams_search=lr_wd",
        "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.sampler.seed=1",
        "hydra/sweeper/pruner=none",
    )
    assert again == sweep
    failing = multirun(
        data_root,
        log_dir,
        "hparams_search=lr_wd",
        "hydra.sweeper.n_trials=1",
        f"hydra.sweep.dir={sweep}",
        "model.max_params=10",
        "hydra/sweeper/pruner=none",
    )
    assert failing == sweep

    trials = optuna.load_study(study_name="lr_wd", storage=storage).trials
    states = [trial.state for trial in trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 4 + [optuna.trial.TrialState.FAIL]
    # Each sampled rate lies in the search's own interval, read from its config.
    search = OmegaConf.load(CONF_DIR / "hparams_search" / "lr_wd.yaml").hydra.sweeper.params
    low, high = map(float, re.search(r"interval\(([^,]+),([^)]+)\)", search["optim.lr"]).groups())
    assert all(low <= trial.params["optim.lr"] <= high for trial in trials)

    # Five trials, five directories: a resumed study never writes into an earlier trial's directory.
    jobs = find_jobs(sweep)
    assert len(jobs) == 5 and len({job.name for job in jobs}) == 5
    rows = summary_rows(sweep)
    assert [row["status"] for row in rows].count("completed") == 4 and rows[-1]["status"] == "failed"
    best = max(trial.value for trial in trials if trial.value is not None)
    assert float(rows[0]["val/acc_best"]) == pytest.approx(best)
