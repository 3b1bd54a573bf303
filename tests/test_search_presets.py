"""Search presets (``hparams_search=...``) compose with any sampler and pruner: a preset selects its sweeper's
options and pins no key of them, so ``hparams_search=lr_wd hydra/sweeper/sampler=random`` builds a random sampler
with the random sampler's own keys, and every composed sampler and pruner is built as the sweeper builds it."""

from __future__ import annotations

from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS

optuna = pytest.importorskip("optuna", reason="needs the [sweeps] extra: pip install -e '.[sweeps]'")
from fmnist_lightning.errors import ConfigError  # noqa: E402 - after the skip, as the next line
from fmnist_lightning.sweeps.search_space import built, check_searched_keys, search_space  # noqa: E402 - needs optuna's extra, skipped above

SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))
SAMPLERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "sweeper" / "sampler").glob("*.yaml"))
PRUNERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "sweeper" / "pruner").glob("*.yaml"))


def composed(*overrides: str) -> Any:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
            return compose("config", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def sweeper(*overrides: str) -> Any:
    """``hydra.sweeper`` as the CLI composes it, resolved."""
    return OmegaConf.to_container(composed(*overrides).hydra.sweeper, resolve=True)


def option(kind: str, name: str) -> Any:
    """A sampler or pruner option's own node, under the sweeper with nothing else chosen."""
    return sweeper("hydra/sweeper=optuna", f"hydra/sweeper/{kind}={name}")[kind]


@pytest.mark.parametrize("search", SEARCHES)
def test_every_sampler_and_pruner_option_works_under_every_search(search: str) -> None:
    for sampler in SAMPLERS:
        node = sweeper(f"hparams_search={search}", f"hydra/sweeper/sampler={sampler}")["sampler"]
        assert node == option("sampler", sampler), (search, sampler)
        # Seeded by the run's seed, and built as the sweeper builds it (a key the sampler does not take fails).
        assert node["seed"] == 42
        assert isinstance(built(OmegaConf.create(node)), optuna.samplers.BaseSampler), (search, sampler)
    for pruner in PRUNERS:
        node = sweeper(f"hparams_search={search}", f"hydra/sweeper/pruner={pruner}")["pruner"]
        assert node == option("pruner", pruner), (search, pruner)
        assert isinstance(built(OmegaConf.create(node)), optuna.pruners.BasePruner), (search, pruner)


def test_the_search_presets_keep_their_own_startup_trials() -> None:
    assert sweeper("hparams_search=lr_wd")["sampler"]["n_startup_trials"] == 5
    assert sweeper("hparams_search=tinyvgg")["sampler"]["n_startup_trials"] == 8


def test_the_median_pruner_can_stop_a_trial_at_the_end_of_its_first_epoch() -> None:
    # The pruning callback reports each epoch as its step, counted from 1 (training/callbacks/optuna_pruning.py).
    pruner = built(OmegaConf.create(option("pruner", "median")))
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for value in (0.90, 0.91, 0.92):  # n_startup_trials finished trials to take a median from
        trial = study.ask()
        trial.report(value, step=1)
        study.tell(trial, value)
    worse = study.ask()
    worse.report(0.50, step=1)
    assert worse.should_prune()


@pytest.mark.parametrize("search", SEARCHES)
def test_a_search_over_keys_the_config_has_not_is_refused_before_its_first_trial(search: str) -> None:
    cfg = composed(f"hparams_search={search}")
    space, _ = search_space([f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()])
    check_searched_keys(space, cfg)  # each search as written: every key it searches is there
    if "model.hidden_units" in space:  # TinyVGG's width, which compact has not
        with pytest.raises(
            ConfigError,
            match=r"^the search's hydra.sweeper.params searches model.hidden_units, which model=compact has not",
        ):
            check_searched_keys(space, composed(f"hparams_search={search}", "model=compact"))
        # A search selects no model of its own: beside a preset it searches that preset's model, or is refused.
        with pytest.raises(ConfigError, match=r"searches model.hidden_units, which model=compact_deep has not"):
            check_searched_keys(space, composed(f"hparams_search={search}", "experiment=best"))


def test_a_sweep_optuna_cannot_search_is_bad_input_that_says_how_to_write_one() -> None:
    # Hydra's grammar has glob() too, which selects config keys, not values to sample.
    with pytest.raises(ConfigError, match=r"^optim\.lr=glob\(\*\): not a sweep Optuna can search; write it as choice"):
        search_space(["optim.lr=glob(*)"])
