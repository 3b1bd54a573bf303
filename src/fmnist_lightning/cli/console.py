"""What reaches the console: records meant for the run's train.log only are kept off it."""

from __future__ import annotations

import logging


class _FileOnly(logging.Filter):
    """Keeps records logged with ``extra=FILE_ONLY`` (config.files) off the console: they go to train.log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def keep_file_only_records_off_console() -> None:
    """Filter Hydra's console handler (train.log's, a FileHandler and so a StreamHandler too, keeps every record)."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(isinstance(f, _FileOnly) for f in handler.filters):
            handler.addFilter(_FileOnly())


class ConsoleFormatter(logging.Formatter):
    """The console's formatter: a record's message without its traceback, which goes to the command's log file only
    (``log_file``), so that no bare traceback reaches a user. A library that logs a warning with its exception (the
    ONNX exporter's opset converter) and a sweep job that failed with a bug both print one line."""

    def __init__(self, format: str, log_file: str = "") -> None:  # format: the key logging.config passes it as
        super().__init__(format)
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        kept = record.exc_info, record.exc_text, record.stack_info
        if not any(kept):
            return super().format(record)
        # The record is shared with the file handler, which formats the traceback: restored right after.
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = kept
        return f"{line} (traceback in {self.log_file})" if self.log_file else line
