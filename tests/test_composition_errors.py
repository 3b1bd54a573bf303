"""A config Hydra cannot compose is one error: line (cli/composition_errors.py), with the nearest real key or
option, and any secret in the refused override masked. Real Hydra composition of the project's conf/."""

from __future__ import annotations

import omegaconf
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from fmnist_lightning.cli.composition_errors import composition_error_line, join_lines
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS

# OmegaConf >= 2.4 adds its own "Did you mean one of: ..." to a key the config lacks.
OMEGACONF_SUGGESTS = int(omegaconf.__version__.split(".")[1]) >= 4


def _refusal(*overrides: str, config: str = "config") -> str:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS), pytest.raises(Exception) as refused:
            compose(config_name=config, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    return composition_error_line(refused.value)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["trainer.max_epoch=3"],
            "Could not override 'trainer.max_epoch'. Key 'max_epoch' is not in struct; To append to your config "
            "use +trainer.max_epoch=3 (did you mean trainer.max_epochs?)",
        ),
        (
            # The key exists one level down, under the logger's own node.
            ["logger=mlflow", "logger.tracking_uri=http://u:pw-7@h:5000"],
            "Could not override 'logger.tracking_uri'. Key 'tracking_uri' is not in struct; To append to your config "
            "use +logger.tracking_uri=http://u:***@h:5000 (did you mean logger.mlflow.tracking_uri?)",
        ),
        (
            ["logger=mlflow", "logger.mlflow.password=pa,ss"],
            "Ambiguous value for argument 'logger.mlflow.password=***'; 1. To use it as a list, use "
            "key=[value1,value2]; 2. To use it as string, quote the value: key='value1,value2'; 3. To sweep "
            "over it, add --multirun to your command line",
        ),
        # Nothing near enough to suggest: no guess.
        (
            ["model.zzz=1"],
            "Could not override 'model.zzz'. Key 'zzz' is not in struct; To append to your config use +model.zzz=1",
        ),
    ],
    ids=["misspelt-key", "key-one-level-down", "secret-in-an-ambiguous-value", "no-near-key"],
)
def test_a_refused_override_is_one_line_with_the_nearest_key(overrides: list[str], line: str) -> None:
    refused = _refusal(*overrides)
    if OMEGACONF_SUGGESTS and "Did you mean one of" in refused:
        # OmegaConf 2.4 names the nearest keys in its own message, and no second suggestion is added.
        head, _, rest = line.partition(" is not in struct;")
        assert refused.startswith(head + " is not in struct. Did you mean one of: '") and "(did you mean" not in refused
        assert refused.endswith(rest.rpartition(" (did you mean")[0]), refused
    else:
        assert refused == line


def test_an_unknown_option_lists_the_group_on_the_line() -> None:
    line = _refusal("model=tinyvg")
    assert "\n" not in line and "Config search path" not in line
    assert line.startswith("In 'config': Could not find 'model/tinyvg'; the options of model are ")
    assert ", tinyvgg, tinyvgg3 (did you mean model=tinyvgg?)" in line and "lenet, " in line


def test_a_group_the_command_has_not_is_refused_without_hydras_advice_to_append_it() -> None:
    # evaluate takes its model from the checkpoint: +model=lenet, as Hydra advises, would compose and be ignored.
    line = _refusal("model=lenet", config="evaluate")
    assert line == (
        "Could not override 'model': it is not a config group of this command; see its --help for the settings it takes"
    )


def test_join_lines_keeps_every_fact_once() -> None:
    text = (
        "Could not override 'a.b'.\nTo append use +a.b=1\nKey 'b' is not in struct\n  full_key: a.b\n  object_type=dict"
    )
    assert join_lines(text) == "Could not override 'a.b'. Key 'b' is not in struct; To append use +a.b=1"
    assert join_lines("while parsing\n  in \"x.yaml\", line 3\n\nexpected ','") == (
        "while parsing; in \"x.yaml\", line 3; expected ','"
    )
