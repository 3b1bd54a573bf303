"""Tracker run names (config/run_names.py) from real sweep directories and a real Hydra compose.

The integration tests read the names back from MLflow and W&B (tests/test_trackers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.config.run_names import name_tracker_runs, run_name, run_tags, sweep_name


@pytest.fixture(autouse=True)
def no_hydra_job() -> None:
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # type: ignore[assignment]  # the singleton's reset: no job of an earlier test


def _sweep(tmp_path: Path, command_line: list[str], jobs: dict[str, list[str]]) -> Path:
    sweep = tmp_path / "2026-12-04_23-10-01_000001"
    sweep.mkdir()
    OmegaConf.save({"hydra": {"overrides": {"task": command_line}}}, sweep / "multirun.yaml")
    for name, overrides in jobs.items():
        (sweep / name / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), sweep / name / ".hydra" / "overrides.yaml")
    return sweep


def test_a_single_run_is_named_for_its_directory(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "2026-12-04_23-10-01_000001"
    assert run_name(str(run)) == run.name
    assert sweep_name(str(run)) is None
    assert run_tags(str(run)) == {"run_dir": str(run)}


def test_a_sweep_job_is_named_for_the_sweep_its_number_and_what_was_swept(tmp_path: Path) -> None:
    common = ["data.root=/data", "paths.log_dir=/tmp/out"]
    sweep = _sweep(
        tmp_path,
        [*common, "optim.lr=1e-3,3e-3", "model=tinyvgg,lenet"],
        {"0": [*common, "optim.lr=1e-3", "model=tinyvgg"], "3": [*common, "optim.lr=3e-3", "model=lenet"]},
    )
    assert run_name(str(sweep / "3")) == f"{sweep.name}/3 optim.lr=3e-3 model=lenet"
    assert sweep_name(str(sweep / "0")) == sweep.name
    assert run_tags(str(sweep / "0")) == {"run_dir": str(sweep / "0"), "sweep": sweep.name, "job": "0"}


def test_a_password_in_a_swept_url_never_reaches_the_name(tmp_path: Path) -> None:
    sweep = _sweep(
        tmp_path, ["+db=postgresql://a:pw1@h/x,postgresql://a:pw2@h/y"], {"1": ["+db=postgresql://a:pw2@h/y"]}
    )
    assert run_name(str(sweep / "1")) == f"{sweep.name}/1 +db=postgresql://a:***@h/y"


def test_an_optuna_trial_is_named_for_its_number_and_the_searched_values(tmp_path: Path) -> None:
    # The Optuna sweeper's jobs: trial_<n> directories, the search space in hydra.sweeper.params.
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=["hparams_search=lr_wd", "optim.lr=0.0021", "optim.weight_decay=0.0003", "seed=3"],
        )
    HydraConfig.instance().set_config(cfg)
    name = run_name(str(tmp_path / "sweep" / "trial_7"))
    assert name == "sweep/trial_7 optim.lr=0.0021 optim.weight_decay=0.0003"


def test_a_secret_in_an_mlflow_tag_is_masked_before_it_reaches_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FMNIST_TEST_DB", "postgresql://me:pw2@db/runs")
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(
            config_name="config",
            overrides=[
                "logger=mlflow",
                "+logger.mlflow.tags.api_token=abc123",
                "+logger.mlflow.tags.source=postgresql://me:pw1@db/runs",
                "+logger.mlflow.tags.db=${oc.env:FMNIST_TEST_DB}",
                "+logger.mlflow.tags.team=vision",
            ],
        )
    run = tmp_path / "runs" / "2026-12-06_22-00-00_000001"
    tags = dict(name_tracker_runs(cfg.logger, str(run)).mlflow.tags)
    assert tags == {
        "run_dir": str(run),
        "api_token": "***",
        "source": "postgresql://me:***@db/runs",
        "db": "postgresql://me:***@db/runs",
        "team": "vision",
    }


def test_a_sweep_file_cut_short_is_named_in_the_error(tmp_path: Path) -> None:
    from fmnist_lightning.errors import ConfigError

    sweep = _sweep(tmp_path, ["optim.lr=1e-3,3e-3"], {"0": ["optim.lr=1e-3"]})
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [optim.lr=1e-3,3e-3\n")
    with pytest.raises(ConfigError, match=r"multirun.yaml is not valid YAML \(line \d+: .*\); restore it"):
        run_name(str(sweep / "0"))


def test_the_logger_configs_get_the_names_and_keep_what_the_user_set(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, ["optim.lr=1e-3,3e-3"], {"1": ["optim.lr=3e-3"]})
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(config_name="config", overrides=["logger=many", "+logger.mlflow.tags.team=vision"])
        mine = compose(config_name="config", overrides=["logger=wandb", "logger.wandb.name=mine"])
    named = name_tracker_runs(cfg.logger, str(sweep / "1"))
    assert named.mlflow.run_name == f"{sweep.name}/1 optim.lr=3e-3"
    assert dict(named.mlflow.tags) == {"run_dir": str(sweep / "1"), "sweep": sweep.name, "job": "1", "team": "vision"}
    assert "run_name" not in named.tensorboard  # TensorBoard keeps its folder layout
    assert cfg.logger.mlflow.run_name is None  # the composed config itself is left as it was
    wandb = name_tracker_runs(mine.logger, str(sweep / "1")).wandb
    assert wandb.name == "mine" and wandb.group == sweep.name
