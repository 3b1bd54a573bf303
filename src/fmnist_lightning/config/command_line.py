"""How Hydra's command line splits into override words and flags, for the code that adds words to it."""

from __future__ import annotations

from collections.abc import Sequence


def override_key(arg: str) -> str:
    """The config key an override word sets (``+a.b=1``, ``++a.b=1``, ``~a.b`` all name ``a.b``)."""
    return arg.partition("=")[0].lstrip("+~")


def is_override(arg: str) -> bool:
    """Whether ``arg`` is an override word rather than a flag or a flag's value (``--cfg job``, ``-cn name``)."""
    return ("=" in arg and not arg.startswith("-")) or arg.startswith("~")


def split_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(overrides, flags)``, each in its order. Hydra's argparse takes the overrides as one run of words, so a
    line that gains words of its own puts them among the overrides and its flags (with their values) after."""
    return [a for a in args if is_override(a)], [a for a in args if not is_override(a)]
