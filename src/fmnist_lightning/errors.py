"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class FmnistError(Exception):
    """Bad input from the user (data, config, checkpoint); the CLI prints it as one line."""


class DataError(FmnistError):
    """The dataset files are missing, truncated or malformed."""


class ConfigError(FmnistError):
    """A config value is impossible or unknown."""


class CheckpointError(FmnistError):
    """A checkpoint cannot be read or does not match the model."""


class TrainingError(FmnistError):
    """Training cannot go on (for example, the loss is no longer finite)."""


def exit_with_error(exc: FmnistError, code: int = 2) -> NoReturn:
    """End a command the way every entry point does on bad input: the log, one ``error:`` line, exit ``code``."""
    logging.getLogger("fmnist_lightning").error("%s", exc)
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(code) from None


def exit_with_failure(exc: BaseException, where: Path | None = None, code: int = 1) -> NoReturn:
    """End a command on an unexpected failure (a bug, a device or library error) as on bad input: one
    ``error:`` line on the console; the traceback goes to ``<where>/error.log`` for a bug report."""
    where = where if where is not None and where.is_dir() else Path(tempfile.mkdtemp(prefix="fmnist-error-"))
    trace = where / "error.log"
    trace.write_text("".join(traceback.format_exception(exc)))
    logging.getLogger("fmnist_lightning").error("%s: %s (traceback in %s)", type(exc).__name__, exc, trace)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    print(f"error: {what} (this is a failure, not bad input; traceback in {trace})", file=sys.stderr)
    raise SystemExit(code) from None


def run_command(command: Callable[[Any], T], cfg: Any) -> T:
    """Run a Hydra command's body: bad input ends as one ``error:`` line (exit 2), any other failure as one
    line too (exit 1) with the traceback in the command's output directory."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return command(cfg)
    except FmnistError as exc:
        exit_with_error(exc)
    except Exception as exc:
        exit_with_failure(exc, Path(HydraConfig.get().runtime.output_dir))


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in one of ``packages``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith(packages)


def run_hydra(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function so that Hydra's own errors (an unknown option, a bad override, a
    malformed config file or defaults list) end as one ``error:`` line too, with exit code 2."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra prints its internal traceback for errors it cannot shorten (a bool in a defaults list, a YAML
    # syntax error) and exits 1. With HYDRA_FULL_ERROR=1 it raises instead, and the message is ours to
    # print; a user who set it wants the traceback, so then Hydra keeps reporting.
    previous = os.environ.get("HYDRA_FULL_ERROR")
    if previous == "1":
        main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except FmnistError as exc:
        exit_with_error(exc)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, ValueError) and not _raised_in(exc, ("hydra.", "omegaconf.", "yaml.")):
            exit_with_failure(exc)  # not the config: a sweeper's, launcher's or callback's own failure
        message = str(exc).strip()
        if isinstance(exc.__cause__, OmegaConfBaseException) and str(exc.__cause__) not in message:
            message += f"\n{exc.__cause__}"
        if "Unsupported item value in defaults : bool" in message:
            message += " (YAML reads on, off, yes, no, true and false as booleans: quote the option, e.g. 'on')"
        if not isinstance(exc, HydraException):
            message = f"the config could not be composed: {message}"
        # Not exit_with_error: logging is not set up before Hydra composes, and would print the line twice.
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:
        exit_with_failure(exc)
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous
