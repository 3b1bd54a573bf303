"""A command never writes into an earlier run's or sweep's directory, where Hydra would replace the earlier files
without a word: a run's ``.hydra/*.yaml`` (what ``resume=`` reads back), and a basic sweep's jobs ``0``, ``1``,
... (their checkpoints, ``metrics.json`` and reports), which a second sweep in the same directory numbers again.

An Optuna search is the one exception: its trials are numbered by its study, and running it again in its
directory is how a search goes on (``hparams_search=... hydra.sweep.dir=<its directory>``).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmnist_lightning.config.command_line import is_multirun, override_key
from fmnist_lightning.config.files import SWEEP_FILE
from fmnist_lightning.config.processes import HOST_TAG, process_alive
from fmnist_lightning.errors import ConfigError

OPTUNA_SWEEPER = "fmnist_optuna_sweeper"
NO_SEARCH = ("", "null", "none")


def given_dir(args: Sequence[str], key: str) -> str | None:
    """The last value the line gives ``key`` (``hydra.run.dir``, ``hydra.sweep.dir``), unquoted; None if none.
    An interpolation is resolved where it needs no config (``${oc.env:RUN}``, ``${now:...}``, which Hydra registers);
    one that names a config key (``${paths.log_dir}/x``) names no directory until Hydra composes: None."""
    values = [a.partition("=")[2].strip("\"'") for a in args if override_key(a) == key]
    if not values or "${" not in values[-1]:
        return values[-1] if values else None
    from hydra.core.utils import setup_globals

    setup_globals()  # Hydra's own resolvers (now), registered when Hydra starts, which is after this guard
    try:
        return str(OmegaConf.create({"dir": values[-1]}).dir)
    except OmegaConfBaseException:
        return None


def hparams_search_of(overrides: Sequence[str]) -> str | None:
    """The ``hparams_search`` option the overrides pick; None where they pick none, remove it or set it to null."""
    chosen = [a.partition("=")[2].strip("\"'") for a in overrides if override_key(a) == "hparams_search"]
    return chosen[-1] if chosen and chosen[-1].lower() not in NO_SEARCH else None


def search_of(args: Sequence[str]) -> str | None:
    """The Optuna search the line asks for: its ``hparams_search`` option, ``optuna`` for the sweeper by name,
    None for none. A search is a sweep with or without ``-m`` (``__main__.searches_are_sweeps``)."""
    return hparams_search_of(args) or ("optuna" if any(a.endswith("hydra/sweeper=optuna") for a in args) else None)


def _searched_there(sweep: Path) -> str | None:
    """The search an earlier sweep in ``sweep`` was (its hparams_search option, or ``optuna``); None if not one."""
    try:
        text = (sweep / SWEEP_FILE).read_text()
    except (OSError, UnicodeDecodeError):
        return None
    if OPTUNA_SWEEPER not in text:
        return None
    found = re.search(r"^\s+hparams_search: (\S+)$", text, re.MULTILINE)
    return found.group(1) if found and found.group(1) not in NO_SEARCH else "optuna"


def _holds_jobs(sweep: Path) -> bool:
    # A sweep that failed before its first job left only multirun.yaml: running it again replaces nothing.
    return sweep.is_dir() and any((job / ".hydra").is_dir() for job in sweep.iterdir() if job.is_dir())


def refuse_existing_output(args: Sequence[str], command: str, fix: str, restarted: bool = False) -> None:
    """Refuse a ``hydra.run.dir`` that holds a run, and a sweep's ``hydra.sweep.dir`` that holds another sweep's jobs.

    ``command`` names what would write there ("a new run", "the evaluate command"); ``fix`` is the line's way out
    besides another directory (e.g. ``resume=<dir>``). ``restarted``: the line is a scheduler's restart of a
    sweep, whose jobs continue in place (``training.requeue``)."""
    sweeps = is_multirun(args) or search_of(args) is not None
    run_dir = given_dir(args, "hydra.run.dir")
    if run_dir and not sweeps and (Path(run_dir).expanduser() / ".hydra").exists():
        raise ConfigError(
            f"{run_dir} already holds a run, and {command} never writes into it: {fix.format(dir=run_dir)}"
            "pick another hydra.run.dir (or leave it out: each run gets a directory of its own)"
        )
    sweep_dir = given_dir(args, "hydra.sweep.dir")
    if not sweep_dir or not sweeps or restarted:
        return
    sweep = Path(sweep_dir).expanduser()
    earlier, wanted = _searched_there(sweep), search_of(args)
    # An Optuna search goes on in its own directory: its trials are numbered by its study. Another search there
    # would number its own from 0 again, into the same trial_<n> folders.
    if _holds_jobs(sweep) and not (earlier is not None and earlier == wanted):
        raise ConfigError(
            f"{sweep_dir} already holds a sweep, whose jobs a new sweep there would replace: pick another "
            "hydra.sweep.dir (or leave it out: each sweep gets a directory of its own); an Optuna search goes on "
            "in its own directory with the same hparams_search=..."
        )


def refuse_foreign_file(path: Path, key: str, ours: Callable[[Path], bool], what: str, example: str) -> None:
    """Refuse an output file ``key=path`` that is a folder, or a file the command did not write (``ours`` tells):
    writing again into its own output replaces it; anything else there is somebody's and is kept."""
    if path.is_dir():
        raise ConfigError(f"{key}={path} is a folder; pass the file to write, e.g. {key}={path / example}")
    if path.exists() and not ours(path):
        raise ConfigError(f"{key}={path} exists and is not {what}; pass a new file name, or move that file away first")


STAGING_PREFIX = ".exporting-"


def staging_folder(out_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """A private folder in ``out_dir`` for files that are moved in only once they are verified, so that a failed
    write leaves ``out_dir`` as it was. It is named for this process: a folder that a killed process of this host
    left (SIGKILL, the machine's OOM killer) is removed here, and one a live process is writing is left alone."""
    for folder in out_dir.glob(f"{STAGING_PREFIX}{HOST_TAG}-*"):
        pid = folder.name.removeprefix(f"{STAGING_PREFIX}{HOST_TAG}-").partition("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
    return tempfile.TemporaryDirectory(prefix=f"{STAGING_PREFIX}{HOST_TAG}-{os.getpid()}-", dir=out_dir)


def unwritable_folder(folder: Path) -> str | None:
    """Why this process cannot write into ``folder`` (making it first, as the writer will), or None if it can.
    Tried, not inferred from permission bits: root passes every ``os.access`` check, and /proc or a read-only
    mount refuses anyway. The trial folder is made in the nearest folder that exists, and removed."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"is not a folder ({existing} is a file)" if existing != folder else "is a file, not a folder"
    try:
        Path(tempfile.mkdtemp(prefix=".write-check-", dir=existing)).rmdir()
    except OSError as exc:
        return f"cannot be written ({existing}: {exc.strerror or exc})"
    return None
