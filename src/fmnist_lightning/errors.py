"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""

from __future__ import annotations

import logging
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
