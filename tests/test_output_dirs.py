"""A command never writes into an earlier run's or sweep's directory (config/output_dirs.py); the CLI cases are in
test_reliability.py, test_sweeps.py and test_evaluate.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmnist_lightning.config.output_dirs import refuse_existing_output
from fmnist_lightning.errors import ConfigError


def _sweep(path: Path, sweeper: str) -> Path:
    path.mkdir()
    (path / "multirun.yaml").write_text(f"hydra:\n  sweeper:\n    _target_: {sweeper}\n")
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


def test_a_sweep_directory_is_refused_unless_an_optuna_search_goes_on_there(tmp_path: Path) -> None:
    basic = _sweep(tmp_path / "basic", "hydra._internal.core_plugins.basic_sweeper.BasicSweeper")
    search = _sweep(tmp_path / "search", "hydra_plugins.fmnist_optuna_sweeper.optuna_sweeper.OptunaSweeper")
    for args in (["-m", f"hydra.sweep.dir={basic}"], ["--multirun", f"hydra.sweep.dir={search}", "optim.lr=1,2"]):
        with pytest.raises(ConfigError, match=r"already holds a sweep, whose jobs a new sweep there would replace"):
            refuse_existing_output(args, "a new run", "")
    # An Optuna search continues in its own directory; a basic sweep's directory is never a search's.
    refuse_existing_output(["-m", f"hydra.sweep.dir={search}", "hparams_search=lr_wd"], "a new run", "")
    with pytest.raises(ConfigError, match="already holds a sweep"):
        refuse_existing_output(["-m", f"hydra.sweep.dir={basic}", "hparams_search=lr_wd"], "a new run", "")
    # A scheduler's restart of the sweep continues its jobs in place; a single run ignores hydra.sweep.dir.
    refuse_existing_output(["-m", f"hydra.sweep.dir={basic}"], "a new run", "", restarted=True)
    refuse_existing_output([f"hydra.sweep.dir={basic}"], "a new run", "")
