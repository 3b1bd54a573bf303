"""A command never writes into an earlier run's or sweep's directory (config/output_dirs.py); the CLI cases are in
test_reliability.py, test_sweeps.py and test_evaluate.py."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from fmnist_lightning.config.output_dirs import STAGING_PREFIX, refuse_existing_output, staging_folder
from fmnist_lightning.config.processes import HOST_TAG
from fmnist_lightning.errors import ConfigError


def _sweep(path: Path, sweeper: str, search: str = "null", jobs: tuple[str, ...] = ("0",)) -> Path:
    """A sweep directory as a sweeper leaves one: its multirun.yaml (the search it was, among the choices) and jobs."""
    path.mkdir()
    (path / "multirun.yaml").write_text(
        f"hydra:\n  sweeper:\n    _target_: {sweeper}\n  runtime:\n    choices:\n      hparams_search: {search}\n"
    )
    for job in jobs:
        (path / job / ".hydra").mkdir(parents=True)
    return path


def test_a_run_directory_that_holds_a_run_is_refused_with_the_way_out(tmp_path: Path) -> None:
    (tmp_path / ".hydra").mkdir()
    with pytest.raises(
        ConfigError,
        match=rf"^{tmp_path} already holds a run, and the evaluate command never writes into it: pick another "
        r"hydra.run.dir \(or leave it out: each run gets a directory of its own\)$",
    ):
        refuse_existing_output([f"hydra.run.dir={tmp_path}"], "the evaluate command", "")
    with pytest.raises(ConfigError, match=rf"never writes into it: continue it with resume={tmp_path}, or pick"):
        refuse_existing_output([f"hydra.run.dir='{tmp_path}'"], "a new run", "continue it with resume={dir}, or ")
    # A new directory, or one without a run's .hydra (an empty folder made beforehand), is the run's.
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new", tmp_path / "empty"):
        refuse_existing_output([f"hydra.run.dir={folder}"], "a new run", "")


def test_a_sweep_directory_is_refused_unless_the_same_optuna_search_goes_on_there(tmp_path: Path) -> None:
    basic = _sweep(tmp_path / "basic", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    optuna = "hydra_plugins.fmnist_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    search = _sweep(tmp_path / "search", optuna, search="lr_wd", jobs=("trial_0", "trial_1"))
    refused = [
        ["-m", f"hydra.sweep.dir={basic}"],
        ["--multirun", f"hydra.sweep.dir={search}", "optim.lr=1,2"],
        # a search is a sweep without -m; a basic sweep's directory is never a search's
        [f"hydra.sweep.dir={basic}", "hparams_search=lr_wd"],
        # another search would number its trials from 0 again, into the same trial_<n> folders
        [f"hydra.sweep.dir={search}", "hparams_search=tinyvgg"],
    ]
    for args in refused:
        with pytest.raises(ConfigError, match=r"already holds a sweep, whose jobs a new sweep there would replace"):
            refuse_existing_output(args, "a new run", "")
    # The same search goes on in its own directory, with -m or without.
    refuse_existing_output([f"hydra.sweep.dir={search}", "hparams_search=lr_wd"], "a new run", "")
    refuse_existing_output(["-m", f"hydra.sweep.dir={search}", "hparams_search=lr_wd"], "a new run", "")
    # A scheduler's restart of the sweep continues its jobs in place; a single run ignores hydra.sweep.dir, and
    # hparams_search=null is no search.
    refuse_existing_output(["-m", f"hydra.sweep.dir={basic}"], "a new run", "", restarted=True)
    refuse_existing_output([f"hydra.sweep.dir={basic}"], "a new run", "")
    refuse_existing_output([f"hydra.sweep.dir={basic}", "hparams_search=null"], "a new run", "")


def test_a_sweep_that_ran_no_job_and_a_directory_still_to_be_named_are_free(tmp_path: Path) -> None:
    # A sweep refused before its first job left only multirun.yaml: the corrected command runs there.
    failed = _sweep(tmp_path / "failed", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", jobs=())
    refuse_existing_output(["-m", f"hydra.sweep.dir={failed}"], "a new run", "")
    # An interpolation of a config key names no directory until Hydra composes the config.
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    refuse_existing_output([f"hydra.run.dir=${{paths.log_dir}}/{tmp_path.name}/run"], "a new run", "")


def test_a_directory_named_through_an_environment_variable_is_resolved_and_guarded(tmp_path: Path) -> None:
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    with pytest.raises(ConfigError, match=f"{tmp_path}/run already holds a run"):
        refuse_existing_output([f"hydra.run.dir={tmp_path}/${{oc.env:FMNIST_TEST_RUN,run}}"], "a new run", "")
    refuse_existing_output([f"hydra.run.dir={tmp_path}/${{oc.env:FMNIST_TEST_RUN,other}}"], "a new run", "")
    # Hydra's own resolver for the time, in a process where Hydra has not started yet (its entry point's guard).
    code = "from fmnist_lightning.config.output_dirs import given_dir; print(given_dir(['d=x/${now:%Y}'], 'd'))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert shown.stdout.strip() == f"x/{datetime.now().year}", shown.stderr


def test_resume_auto_resolves_its_directory_and_refuses_one_named_by_a_config_key(tmp_path: Path) -> None:
    from fmnist_lightning.training.resume import auto_resume

    assert auto_resume([f"hydra.run.dir={tmp_path}/${{oc.env:FMNIST_TEST_RUN,job-7}}", "seed=1"]) == [
        "seed=1",
        f"hydra.run.dir={tmp_path}/job-7",
    ]
    with pytest.raises(ConfigError, match=r"resume=auto needs hydra.run.dir to name its directory before"):
        auto_resume(["hydra.run.dir=${paths.log_dir}/runs/job-7"])


def test_a_command_line_that_only_prints_writes_nothing_and_is_not_refused(tmp_path: Path) -> None:
    from fmnist_lightning.cli.commands import refuse_new_output_in_old

    (tmp_path / ".hydra").mkdir()
    refuse_new_output_in_old([f"hydra.run.dir={tmp_path}", "--cfg", "job"], "evaluate")
    with pytest.raises(ConfigError, match="already holds a run, and the evaluate command never writes into it"):
        refuse_new_output_in_old([f"hydra.run.dir={tmp_path}"], "evaluate")


def test_a_staging_folder_left_by_a_killed_process_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / f"{STAGING_PREFIX}{HOST_TAG}-{gone.stdout.strip()}-a1"
    live = tmp_path / f"{STAGING_PREFIX}{HOST_TAG}-{os.getppid()}-b2"  # pytest's parent: alive while this runs
    other_host = tmp_path / f"{STAGING_PREFIX}0badc0de-{gone.stdout.strip()}-c3"  # its pids mean nothing here
    for folder in (killed, live, other_host):
        (folder / "model.onnx").parent.mkdir()
        (folder / "model.onnx").write_bytes(b"half-written")
    with staging_folder(tmp_path) as staging:
        assert Path(staging).name.startswith(f"{STAGING_PREFIX}{HOST_TAG}-{os.getpid()}-")
        assert not killed.exists() and live.is_dir() and other_host.is_dir()
    assert not Path(staging).exists()
