"""Hydra entry points whose every failure, Hydra's own included, ends as one ``error:`` line."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from fmnist_lightning.cli.composition_errors import composition_error_line
from fmnist_lightning.cli.console import keep_file_only_records_off_console
from fmnist_lightning.cli.exits import exit_on_closed_output, exit_on_interrupt, exit_with_error, exit_with_failure
from fmnist_lightning.config.masking import mask_sweep_files, mask_text
from fmnist_lightning.errors import FmnistError


def _raised_in(exc: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in one of ``packages``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and str(tb.tb_frame.f_globals.get("__name__", "")).startswith(packages)


def mask_warnings() -> None:
    """Python's warnings, printed to stderr outside logging's handlers (and their filter), with their secrets
    masked: a library's warning may quote a URL with its password (config.masking)."""
    if getattr(warnings.showwarning, "masks_secrets", False):
        return
    show = warnings.showwarning

    def masked(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        show(mask_text(str(message)), category, filename, lineno, file, line)

    masked.masks_secrets = True  # type: ignore[attr-defined]  # a mark, so a second call wraps nothing twice
    warnings.showwarning = masked


def run_hydra(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function so that Hydra's own errors (an unknown option, a bad override, a
    malformed config file or defaults list) end as one ``error:`` line too, with exit code 2."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Hydra prints its internal traceback for errors it cannot shorten (a bool in a defaults list, a YAML
    # syntax error) and exits 1. With HYDRA_FULL_ERROR=1 it raises instead, and the message is ours to
    # print; a user who set it wants the traceback, so then Hydra keeps reporting.
    mask_warnings()
    previous = os.environ.get("HYDRA_FULL_ERROR")
    if previous == "1":
        try:
            main()
        finally:
            mask_sweep_files()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except BrokenPipeError:
        exit_on_closed_output()
    except KeyboardInterrupt:
        exit_on_interrupt()
    except FmnistError as exc:
        exit_with_error(exc)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, ValueError) and not _raised_in(exc, ("hydra.", "omegaconf.", "yaml.")):
            # Not the config: a sweeper's, launcher's or callback's own failure.
            exit_with_failure(exc, failure_folder())
        message = composition_error_line(exc)
        # Not exit_with_error: logging is not set up before Hydra composes, and would print the line twice.
        print(f"error: {message}", file=sys.stderr)  # masked there: Hydra quotes the override it refused
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001 - every failure of an entry point is one error: line
        exit_with_failure(exc, failure_folder())
    finally:
        mask_sweep_files()
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def failure_folder() -> Path | None:
    """The run's or sweep's folder, where Hydra has made one, for the traceback of a failure outside a job (a
    sweeper's, a launcher's); None sends it to a temporary folder."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hydra = HydraConfig.get()
        folder = Path(hydra.sweep.dir if hydra.mode == RunMode.MULTIRUN else hydra.runtime.output_dir)
    except Exception:  # noqa: BLE001 - where a traceback goes must never be a second failure
        return None
    # A ${now:...} in the folder's name resolves anew here: a folder that is not there is not the run's.
    return folder if folder.is_dir() else None


def route_lightning_logs() -> None:
    """Send Lightning's messages through the handlers Hydra set up, so each is printed (and logged) once, and keep
    the records meant for train.log only (``extra=FILE_ONLY``) off the console.

    Importing ``lightning`` adds a console handler of its own to the ``lightning`` logger. The commands
    import it only once Hydra has set up logging (so that ``--help`` and config errors answer without
    the seconds-long import), which leaves that handler beside Hydra's: every message twice, in two
    formats. The job_logging config (conf/hydra/default.yaml) gives ``lightning`` no handlers of its own.
    """
    import lightning  # noqa: F401  (the import is what adds the handler)

    logging.getLogger("lightning").handlers.clear()
    keep_file_only_records_off_console()


def quiet_lightning_info() -> None:
    """Silence the device summary and tips Lightning logs for every Trainer; they are noise in a command's output."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
