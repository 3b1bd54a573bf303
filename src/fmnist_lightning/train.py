"""``train(cfg)``: one training run from a composed config, start to finish.

Records where the run came from (run.json), builds the run's parts (``training.run_setup``),
fits, tests the best checkpoint, writes metrics.json and the report. Callable from tests with a composed
config; ``__main__`` wraps it in ``@hydra.main``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from fmnist_lightning.config.checks import check_config
from fmnist_lightning.config.files import FILE_ONLY, METRICS_FILE, RUN_FILE, write_json
from fmnist_lightning.config.run_record import hydra_choices, job_overrides
from fmnist_lightning.errors import FmnistError
from fmnist_lightning.results.report import write_training_report
from fmnist_lightning.results.tracker_uploads import upload_run_files
from fmnist_lightning.sweeps.ddp_jobs import relaunches_command, run_in_own_process
from fmnist_lightning.training.callbacks.interrupt_checkpoint import stop_signal_name
from fmnist_lightning.training.precision import resolve_precision
from fmnist_lightning.training.provenance import now, provenance
from fmnist_lightning.training.requeue import attempts, continue_in_place, end_attempt
from fmnist_lightning.training.resumed_settings import check_resumed_settings
from fmnist_lightning.training.run_header import print_header
from fmnist_lightning.training.run_setup import (
    Run,
    assemble,
    best_checkpoint_path,
    check_checkpoint_fits,
    fit,
    test_best,
)
from fmnist_lightning.training.tracker_checks import check_trackers, close_trackers, tracker_loggers

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and (optionally) test one configuration; return the final metrics."""
    started = time.perf_counter()
    check_config(cfg)
    check_trackers(cfg.get("logger"))
    resolve_precision(cfg)
    output_dir = Path(cfg.paths.output_dir)
    log.info("Run directory: %s", output_dir, extra=FILE_ONLY)
    finished = continue_in_place(cfg)
    if finished is not None:
        return finished
    with refused_before_run():
        check_resumed_settings(cfg, cfg.get("ckpt_path"))
    origin = provenance(str(cfg.trainer.precision), job_overrides())
    origin["attempts"] = attempts(output_dir, origin["started"], cfg.get("ckpt_path"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)  # the header shows the seed

    run = assemble(cfg, started, origin)
    with refused_before_run():
        model = hydra_choices(("model",)).get("model") or cfg.model.name
        check_checkpoint_fits(run, cfg.get("ckpt_path"), model, output_dir)
    if relaunches_command(run.trainer):
        return run_in_own_process(output_dir)
    print_header(cfg, run)
    # Only now: the Trainer has set each process's global rank. Before it, every node of a multi-node job
    # started without RANK in its environment (Lightning's own cluster environment) counts as rank 0.
    rank_zero_only(write_json)(output_dir / RUN_FILE, origin)
    try:
        metrics = fit_test_and_report(cfg, run, started, output_dir)
    except BaseException as exc:
        # Job N+1 of a sweep must not write into this job's tracker run, whatever ended this one.
        close_trackers(run.trainer.loggers, "failed" if isinstance(exc, Exception) else "killed")
        if not isinstance(exc, Exception):  # stopped by a signal: the next attempt reads when and why
            record = run.record.get("provenance") or origin
            end_attempt(record, stopped_by=stop_signal_name())
            rank_zero_only(write_json)(output_dir / RUN_FILE, record)
        raise
    close_trackers(run.trainer.loggers, "success")
    return metrics


def fit_test_and_report(cfg: DictConfig, run: Run, started: float, output_dir: Path) -> dict[str, Any]:
    """Fit, test the best checkpoint, write metrics.json, run.json's end time and the report; upload to trackers."""
    metrics: dict[str, Any] = fit(run, cfg.get("ckpt_path"))
    best = best_checkpoint_path(run.trainer)
    if cfg.get("test"):
        metrics.update(test_best(run, best))
    metrics.update(run.final_metrics(started))
    rank_zero_only(write_json)(output_dir / METRICS_FILE, metrics)
    origin = run.record.get("provenance")
    if origin is not None:
        origin["ended"] = now()  # the same record the checkpoints and the report hold
        end_attempt(origin)
        rank_zero_only(write_json)(output_dir / RUN_FILE, origin)
    if "test/acc" in metrics:
        rank_zero_only(print)(
            f"Test accuracy: {metrics['test/acc']:.4f}  test loss: {metrics['test/loss']:.4f}  "
            f"({metrics['best_model_path'] or 'final weights'}); results in {output_dir}"
        )
    # Last, so that nothing in the report can cost the run its checkpoints or metrics.json.
    if cfg.get("report", True):
        write_training_report(
            run.trainer, run.module, run.datamodule, run.record, metrics, output_dir, best=best or None
        )
    rank_zero_only(upload_run_files)(tracker_loggers(run.trainer.loggers), output_dir, best or None)
    return metrics


@contextmanager
def refused_before_run() -> Iterator[None]:
    """Mark bad input found before the run began, so that its failure leaves the run's directory as it was."""
    try:
        yield
    except FmnistError as exc:
        exc.before_run = True
        raise
