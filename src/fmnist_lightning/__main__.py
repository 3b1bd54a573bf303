"""``python -m fmnist_lightning`` / ``fmnist``: train one configuration (or a sweep with ``-m``)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.cli.commands import hydra_command
from fmnist_lightning.cli.exits import exit_with_error, exit_with_failure
from fmnist_lightning.cli.hydra_entry import route_lightning_logs
from fmnist_lightning.config.command_line import is_multirun, prints_only, split_flags
from fmnist_lightning.config.files import FILE_ONLY, METRICS_FILE
from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.config.output_dirs import hparams_search_of
from fmnist_lightning.config.processes import joins_a_started_run
from fmnist_lightning.errors import FmnistError
from fmnist_lightning.training.resume import RunComplete, has_checkpoint, prepare_argv

log = logging.getLogger("fmnist_lightning")


def check_before_import(cfg: DictConfig) -> None:
    """A single run's config checked before the seconds-long import of torch and Lightning, so that a wrong key
    or value answers at once. (A sweep's jobs are checked by ``train``, where a failure is one failed job.)"""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fmnist_lightning.config.checks import check_config
    from fmnist_lightning.config.files import STATUS_FILE, write_json
    from fmnist_lightning.errors import failure_status

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    try:
        check_config(cfg)
    except FmnistError as exc:
        run = Path(cfg.paths.output_dir)
        # A resume refused before anything ran leaves the run's own status (completed, interrupted) as it was.
        if not (has_checkpoint(run) or (run / METRICS_FILE).is_file()):
            write_json(run / STATUS_FILE, failure_status(exc))
        exit_with_error(exc)


def train_command(cfg: DictConfig) -> float | None:
    """One run (or one job of a sweep): checked, trained, its failure recorded where a user and a sweep look."""
    check_before_import(cfg)
    # Imported here, not at the top: --help, a config error or resume of a finished run answer without
    # the 3 s import of torch and Lightning. Lightning, imported after Hydra set up logging, sees the
    # root logger's handlers and sends its messages through them instead of adding its own.
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from fmnist_lightning.sweeps.ddp_jobs import in_sweep
    from fmnist_lightning.sweeps.job_failures import record_failure, sweep_job_failed
    from fmnist_lightning.sweeps.study_trial import reporting_trial
    from fmnist_lightning.train import train
    from fmnist_lightning.training.callbacks.interrupt_checkpoint import interrupted_exit_code, requeue_if_asked
    from fmnist_lightning.training.provenance import cpu_model

    route_lightning_logs()

    # The whole config goes to train.log (and .hydra/config.yaml); the console gets train()'s short header.
    log.info("Composed config:\n%s", mask_text(OmegaConf.to_yaml(cfg, resolve=True)), extra=FILE_ONLY)
    try:
        # In an Optuna search: the trial's heartbeat while the job runs, and its results (or error) in the study.
        with reporting_trial(Path(cfg.paths.output_dir), cpu_model()) as trial:
            metrics = train(cfg)
            if trial is not None:
                trial.record_results(metrics, cfg.get("optimized_metric"))
    except FmnistError as exc:
        if in_sweep():
            sweep_job_failed(cfg, exc)
            return None
        run = Path(cfg.paths.output_dir)
        # A resume refused before anything ran leaves the run's own status (completed, interrupted) as it was.
        if not (exc.before_run and (has_checkpoint(run) or (run / METRICS_FILE).is_file())):
            record_failure(run, exc)
        exit_with_error(exc)
    except SIGTERMException:
        requeue_if_asked()  # a SLURM job stopped before its time limit: submitit requeues it and exits
        # Lightning's SIGTERMException exits with status 0; a terminated run must not look finished.
        raise SystemExit(interrupted_exit_code()) from None
    except Exception as exc:  # noqa: BLE001 - a failed job, or one error: line for a single run
        # Anything else (a bug, a device error) is one failed job of a sweep too; a single run ends with
        # one error line and keeps the traceback in the run directory.
        if in_sweep():
            sweep_job_failed(cfg, exc)
            return None
        record_failure(Path(cfg.paths.output_dir), exc)
        exit_with_failure(exc, Path(cfg.paths.output_dir))
    # A sweeper (e.g. Optuna) optimises the value returned here.
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


def searches_are_sweeps(args: list[str]) -> list[str]:
    """``args`` with ``--multirun`` added when they pick an Optuna search (``hparams_search=<name>``): a search is
    always a sweep, so it needs no ``-m``. (Hydra 1.4 refuses ``hydra.mode`` set by a config group.)"""
    overrides, flags = split_flags(args)
    # Not for a line that only prints (--cfg hydra), nor for a process joining a trial's run: an Optuna trial's DDP
    # job run again in its own process (sweeps.ddp_jobs) and the ranks Lightning starts, which carry the trial's
    # overrides, hparams_search= among them, into the trial's own directory (hydra.output_subdir=null).
    if prints_only(flags) or joins_a_started_run(args):
        return args
    return [*args, "--multirun"] if hparams_search_of(overrides) and not is_multirun(args) else args


def training_arguments(args: list[str]) -> list[str]:
    """The command line with ``resume=<run dir>`` expanded (Hydra fixes the run directory before the run starts)
    and ``--multirun`` added to a search; resuming a finished run ends here, with exit 0."""
    try:
        return searches_are_sweeps(prepare_argv(args))
    except RunComplete as done:
        print(done)
        raise SystemExit(0) from None


# training_arguments refuse an earlier run's directory themselves, where resume= does not ask for it.
cli = hydra_command("config", train_command, arguments=training_arguments, guards_output=True)


if __name__ == "__main__":
    cli()
