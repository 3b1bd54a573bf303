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
