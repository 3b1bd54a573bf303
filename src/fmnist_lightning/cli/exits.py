"""How a command ends on a failure: one ``error:`` line and an exit code, never a bare traceback."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

from fmnist_lightning.cli.console import keep_file_only_records_off_console
from fmnist_lightning.config.files import FILE_ONLY
from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.errors import FmnistError, typed_line


def _log_to_file(message: str, *args: object) -> None:
    """The failure in train.log too; the console's one line is the ``error:`` line. Before Hydra has set up
    logging there is no log file, and Python's last-resort handler would print the message a second time."""
    if logging.getLogger().handlers:
        keep_file_only_records_off_console()
        logging.getLogger("fmnist_lightning").error(message, *args, extra=FILE_ONLY)


def exit_with_error(exc: FmnistError, code: int = 2) -> NoReturn:
    """End a command the way every entry point does on bad input: the log file, one ``error:`` line, exit ``code``."""
    _log_to_file("%s", exc)
    print(mask_text(f"error: {exc}"), file=sys.stderr)
    raise SystemExit(code) from None


def exit_with_failure(exc: BaseException, where: Path | None = None, code: int = 1) -> NoReturn:
    """End a command on an unexpected failure (a bug, a device or library error) as on bad input: one
    ``error:`` line on the console; the traceback goes to ``<where>/error.log`` for a bug report."""
    where = where if where is not None and where.is_dir() else Path(tempfile.mkdtemp(prefix="fmnist-error-"))
    trace = where / "error.log"
    trace.write_text(mask_text("".join(traceback.format_exception(exc))))
    _log_to_file("%s: %s (traceback in %s)", type(exc).__name__, exc, trace)
    print(
        mask_text(f"error: {typed_line(exc)} (this is a failure, not bad input; traceback in {trace})"), file=sys.stderr
    )
    raise SystemExit(code) from None


def exit_on_closed_output() -> NoReturn:
    """End quietly when the reader of the output went away (``fmnist --help | head``), as command-line tools do.

    Python's advice: point stdout at /dev/null so that the flush at exit does not fail a second time.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(1) from None
