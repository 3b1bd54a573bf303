"""The one ``error:`` line for a config Hydra could not compose.

Hydra's and OmegaConf's messages run over several lines (the options of a group one per line, OmegaConf's
``full_key:`` and ``object_type=`` details, a YAML error's context marks). They are joined into one line here,
and a misspelt key or option gets the nearest real one, as ``git`` and ``pip`` answer a typo.
"""

from __future__ import annotations

import difflib
import re

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.errors import first_line

# Hydra's list after "Could not find 'model/tinyvg'": a header, then one tab-indented option per line.
_OPTIONS = re.compile(r"\s*Available options in '(?P<group>[^']*)':\n(?P<options>(?:\t[^\n]*(?:\n|$))*)")
# Where Hydra looked for config files: its diagnostics, not what the user got wrong.
_SEARCH_PATH = re.compile(r"\n?Config search path:\n(?:\t[^\n]*(?:\n|$))*")
_MISSING_OPTION = re.compile(r"Could not find '(?:[^']*/)?(?P<option>[^'/]*)'")
_NOT_A_GROUP = re.compile(
    r"Could not override '(?P<group>[^']+)'\.\s*No match in the defaults list\.\s*To append to your default list[^\n]*"
)


def composition_error_line(exc: BaseException) -> str:
    """What went wrong in composing (``exc``, Hydra's, OmegaConf's or YAML's), on one line, with a suggestion."""
    from hydra.errors import HydraException, InstantiationException

    message = str(exc).strip()
    if isinstance(exc, InstantiationException) and isinstance(exc.__cause__, ValueError):
        # A value the object itself refused (e.g. the sweeper's n_trials): its own message.
        key = re.search(r"full_key: (\S+)", message)
        said = first_line(exc.__cause__)
        message = f"{key.group(1) + ': ' if key and not said.startswith(key.group(1)) else ''}{said}"
    if isinstance(exc.__cause__, OmegaConfBaseException) and str(exc.__cause__) not in message:
        message += f"\n{exc.__cause__}"
    not_a_group = _NOT_A_GROUP.search(message)
    if not_a_group:
        # Hydra's advice would append the group, which this command then never reads: the run goes on without it.
        group = not_a_group["group"]
        message = (
            f"{message[: not_a_group.start()]}Could not override '{group}': it is not a config group of this command; "
            "see its --help for the settings it takes"
        )
    if "Unsupported item value in defaults : bool" in message:
        message += " (YAML reads on, off, yes, no, true and false as booleans: quote the option, e.g. 'on')"
    if not isinstance(exc, HydraException):
        message = f"the config could not be composed: {message}"
    # Masked line by line, before the lines are joined: a value ends at its line's end.
    message = mask_text(_options_inline(_SEARCH_PATH.sub("", message)))
    # OmegaConf 2.4 suggests keys itself ("Did you mean one of: ..."); ours only where it does not.
    hint = None if "did you mean" in message.lower() else _nearest_key(exc.__cause__)
    return join_lines(message) + (f" (did you mean {hint}?)" if hint else "")


def _nearest_key(cause: BaseException | None) -> str | None:
    try:
        return _nearest_key_of(cause)
    except Exception:  # noqa: BLE001 - a suggestion is a courtesy: never a second failure inside the error line
        return None


def join_lines(message: str) -> str:
    """A several-line message as one line: blank and ``object_type=`` lines dropped, a ``full_key:`` line dropped
    when the message already names the key, Hydra's "To append ..." advice last."""
    lines = [line.strip() for line in message.splitlines()]
    lines = [line for line in lines if line and not line.startswith("object_type=")]
    advice = [line for line in lines if line.startswith("To append")]
    joined = ""
    for line in [line for line in lines if line not in advice] + advice:
        if line.startswith("full_key:") and line.partition(":")[2].strip() in joined:
            continue
        joined += ("" if not joined else " " if joined.endswith((".", ":", ";", ",")) else "; ") + line
    return joined


def _options_inline(message: str) -> str:
    found = _OPTIONS.search(message)
    if not found:
        return message
    group, options = found["group"], found["options"].split()
    wanted = _MISSING_OPTION.search(message)
    close = difflib.get_close_matches(wanted["option"], options, n=1) if wanted else []
    listed = f"; the options of {group} are {', '.join(options)}"
    listed += f" (did you mean {group}={close[0]}?)" if close else ""
    return message[: found.start()] + listed + message[found.end() :]


def _nearest_key_of(cause: BaseException | None) -> str | None:
    """For a key the config does not have (``optim.lrr``): the nearest key of its parent node, or the same key one
    level down (``logger.tracking_uri`` -> ``logger.mlflow.tracking_uri``)."""
    parent = getattr(cause, "parent_node", None)
    key, full_key = getattr(cause, "key", None), getattr(cause, "full_key", None)
    if not isinstance(parent, DictConfig) or not isinstance(key, str) or not isinstance(full_key, str):
        return None
    if not full_key.endswith(key):
        return None
    prefix = full_key[: -len(key)]
    names = [str(name) for name in parent if not str(name).startswith("_")]
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return prefix + close[0]
    for name in names:
        child = parent._get_node(name)  # the node, not its value: an interpolation there is not resolved
        if isinstance(child, DictConfig) and key in set(child):  # its keys, no value resolved
            return f"{prefix}{name}.{key}"
    return None
