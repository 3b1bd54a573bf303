"""An Optuna search space from Hydra's sweep grammar: ``interval()``, ``range()`` and ``choice()`` overrides as
Optuna distributions, and the sweeper's config nodes (sampler, pruner) built through the project's whitelist."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.checks import ValueCheck, check_values, is_int, is_number
from fmnist_lightning.config.hydra_compat import ALLOWED
from fmnist_lightning.errors import ConfigError

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution


def built(node: Any) -> Any:
    """The sampler or pruner object: Hydra 1.3 instantiates a plugin's config recursively and passes it built;
    Hydra 1.4 instantiates plugins with _recursive_=False, so it arrives here as its config node."""
    if OmegaConf.is_dict(node) and "_target_" in node:
        return instantiate(node, **ALLOWED)  # the project's whitelist (Hydra 1.4), which has optuna's
    return node


def _checks() -> tuple[ValueCheck, ...]:
    """The sweeper's own settings, each with what a valid value is (``hydra.sweeper.<key>``)."""
    whole = (is_int, "an integer")
    return tuple(
        (f"hydra.sweeper.{key}", *kind, valid, meaning, f"hydra.sweeper.{key}={example}")
        for key, kind, valid, meaning, example in (
            ("n_trials", whole, lambda v: v >= 1, "a number of trials >= 1 (or null, with max_trials)", 20),
            ("n_jobs", whole, lambda v: v >= 1, "a number of trials at a time >= 1", 1),
            ("max_trials", whole, lambda v: v >= 1, "a budget of trials for the whole study >= 1 (or null)", 40),
            ("retry_failed", whole, lambda v: v >= 0, "a number of retries >= 0", 1),
            ("heartbeat_interval", whole, lambda v: v >= 1, "seconds >= 1 (or null: no heartbeats)", 60),
            ("grace_period", whole, lambda v: v >= 1, "seconds >= 1 (or null)", 120),
            ("max_failure_rate", (is_number, "a number"), lambda v: 0 <= v <= 1, "a share in [0, 1]", 1.0),
            (
                "direction",
                (lambda v: isinstance(v, str), "a string"),
                lambda v: v in ("maximize", "minimize"),
                "maximize or minimize",
                "maximize",
            ),
        )
    )


def check_sweeper_settings(**settings: Any) -> None:
    """Refuse a sweeper setting of the wrong type or out of range, before the study is opened, with one line. A
    ValueError: Hydra builds the sweeper, and reports a constructor's ValueError as that line
    (cli.composition_errors)."""
    try:
        check_values(OmegaConf.create({"hydra": {"sweeper": settings}}), _checks())
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


# Keys of hydra-optuna-sweeper 1.x that have no meaning here.
OBSOLETE = {"search_space": "write the search space under hydra.sweeper.params with interval()/choice()/range()"}


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of one sweep override, or None for a fixed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        choices: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        assert start is not None and stop is not None  # the grammar's range() has both
        if any(isinstance(v, float) for v in (start, stop, step)):
            # range()'s stop is exclusive, Optuna's high inclusive.
            return FloatDistribution(start, stop - step, step=step)
        return IntDistribution(int(start), int(stop) - int(step), step=int(step))
    if not isinstance(value, IntervalSweep):
        raise ConfigError(
            f"{override.input_line}: not a sweep Optuna can search; write it as choice(a,b), range(1,10) or "
            "interval(1e-4,1e-1) (add tag(log, ...) for a log scale)"
        )
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log_scale)
    assert value.start is not None and value.end is not None  # the grammar's interval() has both
    return FloatDistribution(float(value.start), float(value.end), log=log_scale)


def search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """``({key: distribution}, {key: fixed value})`` from Hydra override strings; later ones win."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        found = distribution(override)
        space.pop(key, None), fixed.pop(key, None)
        if found is None:
            fixed[key] = override.get_value_element_as_str()
        else:
            space[key] = found
    return space, fixed


def check_searched_keys(space: Mapping[str, Any], config: DictConfig) -> None:
    """Refuse a searched key the composed config has not (``hparams_search=tinyvgg`` searches ``model.hidden_units``,
    which ``model=compact`` lacks) before the first trial, instead of every trial failing at composition. A config
    group (``aug``, ``hydra/launcher``) or an appended key (``+...``) is searched as Hydra composes it, so it is not
    looked up."""
    groups = OmegaConf.select(config, "hydra.runtime.choices", default=None) or {}
    for key in space:
        if key.startswith(("+", "~")) or key.split("@", 1)[0] in groups or _has_key(config, key):
            continue
        group = key.split(".", 1)[0]
        chosen = groups.get(group)
        where = f"{group}={chosen}" if chosen else "this config"
        raise ConfigError(
            f"the search's hydra.sweeper.params searches {key}, which {where} has not: pick the option the "
            f"search is written for, or search {group}.* keys this one has"
        )


def check_objective_is_measured(space: Mapping[str, Any], config: DictConfig) -> None:
    """Refuse a search for a validation metric in a config without a validation split (``experiment=speedrun``
    trains on all 60,000 images): every trial would train to its end and then fail for want of its value."""
    metric = str(config.get("optimized_metric") or "")
    data = config.get("data") or {}
    if not metric.startswith("val/") or data.get("val_size") != 0 or data.get("folds") is not None:
        return
    if any(key.lstrip("+") in ("data.val_size", "data.folds") for key in space):
        return  # the search sets the split itself
    raise ConfigError(
        f"the search optimizes {metric}, which a run with data.val_size=0 never measures: add data.val_size=5000 "
        "(a search picks settings on the validation split, never on the test set)"
    )


def _has_key(config: DictConfig, key: str) -> bool:
    """Whether ``key`` is in ``config``, whatever its value (``???``, an interpolation that does not resolve yet)."""
    node: Any = config
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in node:
            return False
        node = node._get_node(part)  # the node itself, unresolved: DictConfig has no public accessor for it
        if node is not None and node._is_interpolation():
            try:
                node = node._dereference_node()
            except Exception:  # noqa: BLE001 - it resolves only in the job (${hydra:...}): not this check's to refuse
                return True
    return True
