"""A command never writes into an earlier run's or sweep's directory, where Hydra would replace the earlier files
without a word: a run's ``.hydra/*.yaml`` (what ``resume=`` reads back), and a basic sweep's jobs ``0``, ``1``,
... (their checkpoints, ``metrics.json`` and reports), which a second sweep in the same directory numbers again.

An Optuna search is the one exception: its trials are numbered by its study, and running it again in its
directory is how a search goes on (``hparams_search=... hydra.sweep.dir=<its directory>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fmnist_lightning.config.command_line import is_multirun, override_key
from fmnist_lightning.config.files import SWEEP_FILE
from fmnist_lightning.errors import ConfigError

OPTUNA_SWEEPER = "fmnist_optuna_sweeper"


def given_dir(args: Sequence[str], key: str) -> str | None:
    """The last value the line gives ``key`` (``hydra.run.dir``, ``hydra.sweep.dir``), unquoted; None if none."""
    values = [a.partition("=")[2].strip("\"'") for a in args if override_key(a) == key]
    return values[-1] if values else None


def is_search(args: Sequence[str]) -> bool:
    """Whether the line asks for an Optuna search (an ``hparams_search`` option, or the sweeper by name)."""
    return any(override_key(a) == "hparams_search" or a.endswith("hydra/sweeper=optuna") for a in args)


def _holds_search(sweep: Path) -> bool:
    try:
        return OPTUNA_SWEEPER in (sweep / SWEEP_FILE).read_text()
    except (OSError, UnicodeDecodeError):
        return False


def refuse_existing_output(args: Sequence[str], command: str, fix: str, restarted: bool = False) -> None:
    """Refuse a ``hydra.run.dir`` that holds a run, and a sweep's ``hydra.sweep.dir`` that holds another sweep.

    ``command`` names what would write there ("a new run", "fmnist-evaluate"); ``fix`` is the line's way out
    besides another directory (e.g. ``resume=<dir>``). ``restarted``: the line is a scheduler's restart of a
    sweep, whose jobs continue in place (``training.requeue``)."""
    run_dir = given_dir(args, "hydra.run.dir")
    if run_dir and not is_multirun(args) and (Path(run_dir).expanduser() / ".hydra").exists():
        raise ConfigError(
            f"{run_dir} already holds a run, and {command} never writes into it: {fix.format(dir=run_dir)}"
            "pick another hydra.run.dir (or leave it out: each run gets a directory of its own)"
        )
    sweep_dir = given_dir(args, "hydra.sweep.dir")
    if not sweep_dir or not is_multirun(args) or restarted:
        return
    sweep = Path(sweep_dir).expanduser()
    if (sweep / SWEEP_FILE).is_file() and not (is_search(args) and _holds_search(sweep)):
        raise ConfigError(
            f"{sweep_dir} already holds a sweep, whose jobs a new sweep there would replace: pick another "
            "hydra.sweep.dir (or leave it out: each sweep gets a directory of its own); an Optuna search goes on "
            "in its own directory with its hparams_search=..."
        )
