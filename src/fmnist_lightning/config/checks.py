"""Checks of a composed config, made before anything is built or any data is read, so a stray key or a
typo'd value stops the run within a couple of seconds with one line instead of a traceback from deep
inside torch: every ``_target_`` node's keys against its callable's signature, the common knobs' values,
and settings that cannot work together."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmnist_lightning.config.combinations import check_together
from fmnist_lightning.config.hydra_compat import TARGETS, allowed
from fmnist_lightning.config.literal_choices import literal_choices
from fmnist_lightning.config.masking import SECRET_KEY
from fmnist_lightning.config.output_dirs import unwritable_folder
from fmnist_lightning.config.run_record import hydra_choices
from fmnist_lightning.config.signatures import (
    FORWARDED_KWARGS,
    Found,
    lookup,
    source_signature,
    takes_any_keyword,
    with_forwarded,
)
from fmnist_lightning.errors import ConfigError

# Hydra's own keys of an instantiated node, not arguments of its target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})
# Values of a Literal-annotated parameter that this project resolves itself before the callable is built.
OWN_CHOICES = {
    ("lightning.pytorch.trainer.trainer.Trainer", "precision"): ("auto",),  # training/precision.py
}
# The keys of a logger or a callback that name a folder it writes into.
FOLDER_KEYS = frozenset({"save_dir", "dirpath", "dir", "artifact_location"})
# Beyond this many, the error line names the nearest accepted keys and how many more there are.
LISTED_KEYS = 20


def check_config(cfg: DictConfig) -> None:
    """Every check of this module, cheapest first; the first problem found is raised as a ConfigError."""
    check_targets(cfg)
    check_values(cfg)
    check_together(cfg)
    check_folders(cfg)


def check_folders(cfg: DictConfig) -> None:
    """Refuse a logger's or a callback's folder (``FOLDER_KEYS``) this process cannot write: else
    the run fails at its first log or checkpoint, after its data is read and its trackers have opened."""
    for path, node in target_nodes(cfg):
        for key in FOLDER_KEYS.intersection(str(k) for k in node):
            try:
                value = node[key]
            except OmegaConfBaseException:  # an interpolation that cannot resolve yet: checked where it is used
                continue
            if isinstance(value, str) and value and "://" not in value:
                problem = unwritable_folder(Path(value).expanduser())
                if problem:
                    raise ConfigError(f"{path}.{key}={value} {problem}; pick a folder you can write to")


def target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """``(key path, node)`` of every node with a ``_target_``, each at its own place in the config: a value
    that is an interpolation (``module.optimizer: ${optim}``) is checked where it points, not again."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        keys = [k for k in node if not (path == "" and k == "hydra")]
        children: list[tuple[str, Any]] = [(str(k), node._get_node(k)) for k in keys]
    elif isinstance(node, ListConfig):
        children = [(str(i), node._get_node(i)) for i in range(len(node))]
    else:
        return
    for key, child in children:
        if child is None or child._is_interpolation() or child._is_missing():
            continue
        if isinstance(child, (DictConfig, ListConfig)):
            yield from target_nodes(child, f"{path}.{key}" if path else key)


def check_targets(cfg: DictConfig) -> None:
    """Refuse a ``_target_`` outside ``TARGETS`` (by its name and by where it is defined), one that cannot be
    found, and a key its callable does not take (``**kwargs`` takes any)."""
    choices = hydra_choices(groups=None)
    for path, node in target_nodes(cfg):
        target = node.get("_target_")
        if not isinstance(target, str):
            raise ConfigError(f"{path}._target_ must be the dotted name of a class or function, got {target!r}")
        # Hydra 1.4 refuses such a target too (its execution whitelist); checked here on 1.3 as well, and before
        # anything is imported.
        _check_allowed(path, target, target)
        keys = [str(key) for key in node if key not in HYDRA_KEYS]
        try:
            found = lookup(target, node, signature=bool(keys))
        except (ImportError, LookupError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"{path}._target_={target} cannot be found: {reason.rstrip('.')}{'' if reason.endswith('?') else '.'} "
                "Check the name, and that the package that provides it is installed"
            ) from None
        _check_allowed(path, target, found.defined_at)  # a name inside an allowed package may lead out of it
        # The group the node came from: the innermost one (ema's node sits in callbacks.ema).
        group = next((part for part in reversed(path.split(".")) if part in choices), None)
        _check_keys(path, node, target, found, keys, f"{group}={choices[group]}" if group else None)


def _check_keys(path: str, node: DictConfig, target: str, found: Found, keys: list[str], option: str | None) -> None:
    """Each key against the callable's parameters (those its ``**kwargs`` reach where the library says where:
    a logger's), and the value of one annotated ``Literal[...]`` against its choices."""
    signature = found.signature
    if signature is not None and takes_any_keyword(signature) and any(key not in signature.parameters for key in keys):
        signature = with_forwarded(found)
    if signature is None:
        return
    if not takes_any_keyword(signature):
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = [name for name, p in signature.parameters.items() if p.kind in kinds]
        for key in keys:
            if key not in accepted:
                raise ConfigError(_stray_key_line(f"{path}.{key}" if path else key, key, target, accepted, option))
    for key in keys:
        choices = literal_choices(_written_annotation(found, signature, key))
        choices = choices and (*choices, *OWN_CHOICES.get((found.defined_at, key), ()))
        if not choices:
            continue
        try:
            value = node[key]
        except OmegaConfBaseException:  # an interpolation that cannot resolve yet, or ???: reported where it is used
            continue
        # True == 1 in Python; a Literal[1] is not satisfied by YAML's true, nor Literal[True] by 1.
        if not any(value == choice and isinstance(value, bool) == isinstance(choice, bool) for choice in choices):
            allowed = ", ".join(dict.fromkeys(shown_value(choice) for choice in choices))  # 16 and "16" read alike
            origin = f" ({option})" if option else ""
            raise ConfigError(
                f"{path}.{key}={shown_value(value)}: {target}{origin} takes one of {allowed}; "
                f"correct the value, e.g. {path}.{key}={shown_value(choices[0])}"
            )


def _written_annotation(found: Found, signature: inspect.Signature, key: str) -> Any:
    """``key``'s annotation as its source writes it (the callable's, or the one its ``**kwargs`` reach): the same
    answer whether its module is imported or not. An alias (Lightning's ``_PRECISION_INPUT``) is a name here, so
    its values are left to the callable to check."""
    forwarded = FORWARDED_KWARGS.get(found.defined_at, ("",))[0]
    for target in (found.defined_at, forwarded):
        source = source_signature(target) if target else None
        if source is not None and key in source.parameters:
            return source.parameters[key].annotation
    annotation = signature.parameters[key].annotation if key in signature.parameters else inspect.Parameter.empty
    return annotation if isinstance(annotation, str) else inspect.Parameter.empty


def shown_value(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_allowed(path: str, target: str, name: str) -> None:
    if allowed(name):
        return
    leads = f" (it is {name})" if name != target else ""
    raise ConfigError(
        f"{path}._target_={target}{leads} is not among the callables a config may build here "
        f"({', '.join(TARGETS)}); if you trust it, add it to TARGETS in "
        "src/fmnist_lightning/config/hydra_compat.py"
    )


def _stray_key_line(where: str, key: str, target: str, accepted: list[str], option: str | None) -> str:
    """One line: where the key is, which callable refused it, the nearest accepted name, what it takes."""
    nearest = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
    hint = f"Did you mean `{nearest[0]}`? " if nearest else ""
    origin = f" ({option})" if option else ""
    if SECRET_KEY.search(key):
        where = f"`{where}`"  # else the line reads as `api_key: <value>` and is masked from there to its end
    shown = sorted(accepted, key=lambda name: -difflib.SequenceMatcher(None, key, name).ratio())[:LISTED_KEYS]
    listed = ", ".join(name for name in accepted if name in shown)
    more = f" and {len(accepted) - len(shown)} more" if len(accepted) > len(shown) else ""
    return (
        f"{where}: {target}{origin} takes no argument `{key}`. {hint}"
        f"It takes {listed or 'no arguments'}{more}. Correct or remove the key."
    )


def is_int(value: Any) -> bool:
    """An int, not a bool (YAML's true is one to Python, never a count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric(value: Any, kind: type[int] | type[float]) -> int | float | None:
    """``value`` as ``kind``, a string of digits too (``${oc.env:PORT}`` resolves to one); None if it is not one."""
    if is_int(value) if kind is int else is_number(value):
        return kind(value)
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            return None
    return None


# (key, type check, type name, value check, what a valid value is, example).
ValueCheck = tuple[str, Any, str, Any, str, str]
VALUE_CHECKS: tuple[ValueCheck, ...] = (
    ("optim.lr", is_number, "a number", lambda v: v > 0, "a learning rate > 0", "optim.lr=0.001"),
    ("optim.weight_decay", is_number, "a number", lambda v: v >= 0, "a weight decay >= 0", "optim.weight_decay=0.0005"),
    ("optim.momentum", is_number, "a number", lambda v: 0 <= v < 1, "a momentum in [0, 1)", "optim.momentum=0.9"),
    ("data.batch_size", is_int, "an integer", lambda v: v >= 1, "a batch size >= 1", "data.batch_size=64"),
    ("data.eval_batch_size", is_int, "an integer", lambda v: v >= 1, "a batch size >= 1", "data.eval_batch_size=512"),
    (
        "data.val_size",
        is_number,
        "a number",
        lambda v: v >= 0 and (is_int(v) or v < 1),
        "a validation count >= 0 or a fraction in [0, 1)",
        "data.val_size=5000",
    ),
    (
        "trainer.max_epochs",
        is_int,
        "an integer",
        lambda v: v >= 1 or v == -1,
        "a number of epochs >= 1 (or -1 for no limit)",
        "trainer.max_epochs=10",
    ),
    (
        "trainer.accumulate_grad_batches",
        is_int,
        "an integer",
        lambda v: v >= 1,
        "an integer >= 1",
        "trainer.accumulate_grad_batches=1",
    ),
    (
        "module.label_smoothing",
        is_number,
        "a number",
        lambda v: 0 <= v < 1,
        "a value in [0, 1)",
        "module.label_smoothing=0.1",
    ),
    (
        # Used only by the final test's views: unchecked, a bad one would fail after the whole training.
        "module.tta_shift",
        is_int,
        "an integer",
        lambda v: v >= 0,
        "a shift in pixels >= 0 (0: mirror views only)",
        "module.tta_shift=1",
    ),
    (
        "model.max_params",
        is_int,
        "an integer",
        lambda v: v >= 1,
        "a parameter budget >= 1 (or null)",
        "model.max_params=100000",
    ),
    # numpy's generator, which Lightning seeds too, takes 32 bits.
    ("seed", is_int, "an integer", lambda v: 0 <= v < 2**32, "a seed in 0..4294967295 (or null)", "seed=42"),
    # Lightning's own message says "an int" for -1 too; each split's limit is a count or a fraction.
    *(
        (
            f"trainer.limit_{split}_batches",
            is_number,
            "a number",
            lambda v: v >= 0 and (is_int(v) or v <= 1),
            "a number of batches >= 0 or a fraction in [0, 1] (null: all)",
            f"trainer.limit_{split}_batches=0.25",
        )
        for split in ("train", "val", "test", "predict")
    ),
    # Any string would pass for true where Python reads them as conditions.
    *(
        (key, is_bool, "a boolean", lambda v: True, "true or false", f"{key}=false")
        for key in ("test", "report", "module.tta", "data.download")
    ),
)


def whole(key: str, minimum: int, meaning: str, example: str) -> ValueCheck:
    """A check that a command's ``key`` is an integer >= ``minimum`` (a count, a size, a port), or a string of one
    from the environment."""
    return (key, lambda v: _numeric(v, int) is not None, "an integer", lambda v: int(v) >= minimum, meaning, example)


def positive(key: str, meaning: str, example: str) -> ValueCheck:
    """A check that a command's ``key`` is a number > 0 (a tolerance, a size in MB), or a string of one."""
    return (key, lambda v: _numeric(v, float) is not None, "a number", lambda v: float(v) > 0, meaning, example)


def check_values(cfg: DictConfig, checks: tuple[ValueCheck, ...] = VALUE_CHECKS) -> None:
    """Refuse impossible or mistyped values (by default the training's common knobs; a command passes its own
    options'), each with one line saying how to fix it."""
    for key, type_ok, type_name, value_ok, meaning, example in checks:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if not type_ok(value):
            raise ConfigError(
                f"{key}={value!r} is {type(value).__name__}, not {type_name}: it must be {meaning}, e.g. {example}"
            )
        if not value_ok(value):
            raise ConfigError(f"{key}={value} is impossible: it must be {meaning}, e.g. {example}")
