"""User-facing errors: one line saying what is wrong and how to fix it, never a traceback."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn


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
