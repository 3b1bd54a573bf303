"""How a command ends on a failure: one ``error:`` line and an exit code, never a bare traceback."""

from __future__ import annotations

import contextlib
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
from fmnist_lightning.errors import FmnistError, on_one_line, typed_line


def _log_to_file(message: str, *args: object) -> None:
    """The failure in train.log too; the console's one line is the ``error:`` line. Before Hydra has set up
    logging there is no log file, and Python's last-resort handler would print the message a second time."""
    if logging.getLogger().handlers:
        keep_file_only_records_off_console()
        logging.getLogger("fmnist_lightning").error(message, *args, extra=FILE_ONLY)


def exit_with_error(exc: FmnistError, code: int = 2) -> NoReturn:
    """End a command the way every entry point does on bad input: the log file, one ``error:`` line, exit ``code``."""
    _log_to_file("%s", exc)
    # Our messages are one line already; one that quotes a library's several lines is joined, not cut.
    print(mask_text(f"error: {on_one_line(str(exc))}"), file=sys.stderr)
    raise SystemExit(code) from None


def exit_with_failure(exc: BaseException, where: Path | None = None, code: int = 1) -> NoReturn:
    """End a command on an unexpected failure (a bug, a device or library error) as on bad input: one
    ``error:`` line on the console; the traceback goes to ``<where>/error.log`` for a bug report."""
    saved = _save_traceback(exc, where)
    _log_to_file("%s: %s (traceback %s)", type(exc).__name__, exc, saved)
    print(mask_text(f"error: {typed_line(exc)} (this is a failure, not bad input; traceback {saved})"), file=sys.stderr)
    raise SystemExit(code) from None


def _save_traceback(exc: BaseException, where: Path | None) -> str:
    """Write the traceback to ``<where>/error.log``, or to a temporary folder when ``where`` cannot take it (read
    only, a full disk: often the very failure being reported); say where it went, or why it went nowhere."""
    text = mask_text("".join(traceback.format_exception(exc)))
    if where is not None and where.is_dir():
        with contextlib.suppress(OSError):
            (where / "error.log").write_text(text)
            return f"in {where / 'error.log'}"
    try:
        trace = Path(tempfile.mkdtemp(prefix="fmnist-error-")) / "error.log"
        trace.write_text(text)
    except OSError as not_written:
        return f"not saved: {not_written.strerror or type(not_written).__name__}"
    return f"in {trace}"


def exit_on_interrupt() -> NoReturn:
    """Ctrl-C outside a Trainer's fit or test (a checkpoint loading, an export, the data download): the shell's
    convention, exit 128 + SIGINT, with one line. A run's fit ends itself (training.callbacks.interrupt_checkpoint)."""
    print("error: interrupted (Ctrl-C)", file=sys.stderr)
    raise SystemExit(130) from None


def exit_on_closed_output() -> NoReturn:
    """End quietly when the reader of the output went away (``fmnist --help | head``), as command-line tools do.

    Python's advice: point stdout at /dev/null so that the flush at exit does not fail a second time.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(1) from None
