"""How Hydra's command line splits into override words and flags, for the code that adds words to it.

Hydra's argparse takes the overrides as one run of words, wherever its flags are (``aug=strong --cfg job``,
``--multirun optim.lr=0.1,0.2``): a word added after a flag's value would be refused. Its flags are read from
Hydra's own parser, so a flag's value (``--cfg job``, ``-cn my_config``, ``--info defaults``) is never taken for
an override, whatever it looks like.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from functools import cache

OVERRIDE, FLAG, VALUE = "override", "flag", "value"
# Hydra's flags after which it prints and exits without running the job (argparse dests).
PRINT_ONLY = frozenset({"help", "hydra_help", "version", "cfg", "info", "shell_completion"})


def override_key(arg: str) -> str:
    """The config key an override word sets (``+a.b=1``, ``++a.b=1``, ``~a.b`` all name ``a.b``)."""
    return arg.partition("=")[0].lstrip("+~")


@cache
def _options() -> dict[str, argparse.Action]:
    from hydra._internal.utils import get_args_parser  # Hydra's own parser: its flags and which take a value

    # argparse keeps its actions in a private list; there is no public accessor.
    return {option: action for action in get_args_parser()._actions for option in action.option_strings}


def _flag(word: str) -> tuple[argparse.Action | None, bool]:
    """The action of a flag word, by its exact name or, as argparse allows, an unambiguous long prefix or a short
    flag with its value attached (``-cjob``); and whether the word holds its value (``--cfg=job``, ``-cjob``)."""
    name, equals, _ = word.partition("=")
    options = _options()
    if name in options:
        return options[name], bool(equals)
    if not word.startswith("--") and word[:2] in options and options[word[:2]].nargs != 0:
        return options[word[:2]], True
    matches = {id(a): a for option, a in options.items() if name.startswith("--") and option.startswith(name)}
    return (next(iter(matches.values())), bool(equals)) if len(matches) == 1 else (None, bool(equals))


def word_kinds(args: Sequence[str]) -> list[str]:
    """Each word's kind: ``OVERRIDE``, ``FLAG``, or ``VALUE`` (a flag's value, or a stray word)."""
    kinds: list[str] = []
    pending: argparse.Action | None = None
    for arg in args:
        if pending is not None:
            takes = pending.nargs is None or arg in (pending.choices or ())
            pending = None
            if takes:
                kinds.append(VALUE)
                continue
        if arg.startswith("-"):
            kinds.append(FLAG)
            action, holds_value = _flag(arg)
            if action is not None and not holds_value and action.nargs in (None, "?"):
                pending = action
        else:
            kinds.append(OVERRIDE if "=" in arg or arg.startswith("~") else VALUE)
    return kinds


def split_flags(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(overrides, flags with their values)``, each in its order: a line that gains words of its own puts
    them among the overrides, and the flags after them."""
    words = list(zip(args, word_kinds(args), strict=True))
    return [a for a, kind in words if kind == OVERRIDE], [a for a, kind in words if kind != OVERRIDE]


def first_override(args: Sequence[str]) -> int:
    """Where the line's run of overrides starts; 0 when it has none (words put there come before every flag,
    so they cannot be taken for an optional flag value such as ``--info``'s)."""
    return next((i for i, kind in enumerate(word_kinds(args)) if kind == OVERRIDE), 0)


def _flag_dests(args: Sequence[str]) -> set[str]:
    """The argparse dests of the line's flags (``cfg`` for ``--cfg job``, ``multirun`` for ``-m``)."""
    return {
        action.dest
        for a, kind in zip(args, word_kinds(args), strict=True)
        if kind == FLAG and (action := _flag(a)[0]) is not None
    }


def prints_only(args: Sequence[str]) -> bool:
    """Whether Hydra will only print (``--cfg job``, ``--info``, ``--help``) and run no job."""
    return bool(_flag_dests(args) & PRINT_ONLY)


def is_multirun(args: Sequence[str]) -> bool:
    """Whether the line asks for a sweep (``-m``, ``--multirun``, or a prefix of it such as ``--multi``)."""
    return "multirun" in _flag_dests(args)
