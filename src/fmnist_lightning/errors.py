"""User-facing errors: the exception types every layer raises, and how one reads as a single line."""

from __future__ import annotations


class FmnistError(Exception):
    """Bad input from the user (data, config, checkpoint); the CLI prints it as one line."""

    # Raised before the run began (a resume refused: another optimizer, a model its weights do not fit): the
    # run's directory, finished or interrupted, is left as it was, its status included.
    before_run = False


class DataError(FmnistError):
    """The dataset files are missing, truncated or malformed."""


class ConfigError(FmnistError):
    """A config value is impossible or unknown."""


class CheckpointError(FmnistError):
    """A checkpoint cannot be read or does not match the model."""


class TrainingError(FmnistError):
    """Training cannot go on (for example, the loss is no longer finite)."""


class ExportError(FmnistError):
    """The model could not be exported, or the exported file does not behave like the checkpoint."""


def first_line(exc: BaseException) -> str:
    """The first line of the exception's message, or its type's name when the message is empty.

    Library errors (torch, onnxruntime, Hydra) often carry a page of detail after a first line that
    says what went wrong; a one-line error keeps only that.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def on_one_line(text: str) -> str:
    """A several-line message (a library's, quoted inside ours) as one line: its lines joined with "; "."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def typed_line(exc: BaseException) -> str:
    """``Type: first line``, or the type alone when the message is empty."""
    return f"{type(exc).__name__}: {first_line(exc)}" if str(exc).strip() else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """The error as the CLI prints it: our own errors are already one line; others get their type."""
    return first_line(exc) if isinstance(exc, FmnistError) else typed_line(exc)


def failure_status(exc: BaseException) -> dict[str, str | bool]:
    """What ``status.json`` holds for a run that failed with ``exc`` (``bad_input``: the user's to fix)."""
    return {
        "status": "failed",
        "error": one_line(exc),
        "error_type": type(exc).__name__,
        "bad_input": isinstance(exc, FmnistError),
    }
