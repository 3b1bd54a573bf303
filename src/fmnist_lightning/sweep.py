"""Jobs of a sweep: a failed job is recorded and the sweep goes on; the summary is written when it ends.

Hydra's basic sweeper re-raises a failed job's exception once its batch has run, which
ends the sweep; the Optuna sweeper instead marks the trial failed and goes on (up to its
``max_failure_rate``). So a job that fails inside a sweep writes ``status.json`` into
its directory and, under the basic sweeper, returns no value instead of raising; under
Optuna it raises, so the trial is stored as failed with the real error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fmnist_lightning.errors import FmnistError
from fmnist_lightning.summarize import STATUS_FILE, write_summary

log = logging.getLogger(__name__)

# Sweepers that catch a job's exception themselves and record the trial as failed.
SWEEPERS_THAT_RECORD_FAILURES = ("hydra_plugins.fmnist_optuna_sweeper.optuna_sweeper.OptunaSweeper",)


def one_line(exc: BaseException) -> str:
    """The error as the CLI prints it: our own errors are already one line; others get their type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text if isinstance(exc, FmnistError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def record_failure(output_dir: Path, exc: BaseException) -> str:
    """Write ``status.json`` (failed, the one-line error) into the run's directory; return the line."""
    from fmnist_lightning.train import write_json

    line = one_line(exc)
    write_json(output_dir / STATUS_FILE, {"status": "failed", "error": line, "error_type": type(exc).__name__})
    return line


def sweep_job_failed(cfg: DictConfig, exc: Exception) -> None:
    """Record a failed job and let the sweep go on (see the module docstring for why it returns or raises)."""
    line = record_failure(Path(cfg.paths.output_dir), exc)
    if isinstance(exc, FmnistError):
        log.error("Job failed; the sweep goes on: %s", line)
    else:
        log.exception("Job failed; the sweep goes on: %s", line)
    if HydraConfig.get().sweeper.get("_target_") in SWEEPERS_THAT_RECORD_FAILURES:
        raise exc
    return None


class SweepSummary(Callback):
    """Hydra callback: writes summary.csv, summary.md and summary.png into the sweep directory."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The Optuna sweeper opens its sqlite study there before any job has created the directory.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here: every command shares this Hydra config, and predict model=<file> runs without Lightning.
        from lightning.pytorch.utilities import rank_zero_only

        if rank_zero_only.rank != 0:
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = write_summary(sweep_dir)
        except FmnistError as exc:
            log.warning("No sweep summary: %s", exc)
            return
        log.info("Sweep summary (%s) in %s", summary.counts_text(), sweep_dir)
        print(f"Sweep summary: {summary.headline()}\n  {sweep_dir / 'summary.md'}")
