"""A run's files in its tracker runs: report.md, the figures, the composed config, run.json, metrics.json
and the best checkpoint, uploaded once the report is written (MLflow artifacts; files of the W&B run)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

from fmnist_lightning.config.files import METRICS_FILE, RUN_FILE

log = logging.getLogger(__name__)

CONFIG_FILE = Path(".hydra") / "config.yaml"
REPORT_FILES = ("report.md", "*.png")


def run_files(output_dir: Path) -> list[Path]:
    """The run directory's files worth keeping beside the metrics, those that exist."""
    files = [output_dir / name for name in (METRICS_FILE, RUN_FILE, CONFIG_FILE)]
    files += [path for pattern in REPORT_FILES for path in sorted(output_dir.glob(pattern))]
    return [path for path in files if path.is_file()]


def upload_run_files(loggers: Sequence[Logger], output_dir: Path, best: str | None) -> None:
    """Upload ``run_files`` and the best checkpoint to every tracker logger, under their paths in the run directory."""
    files = run_files(output_dir) + ([Path(best)] if best else [])
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            client, run_id = logger.experiment, logger.run_id
            for path in files:
                folder = _relative(path, output_dir).parent
                client.log_artifact(run_id, str(path), artifact_path=None if folder == Path(".") else str(folder))
        elif isinstance(logger, WandbLogger):
            import wandb

            # One artifact of the run's files, kept with the offline run and uploaded by `wandb sync`.
            artifact = wandb.Artifact(f"run-{logger.experiment.id}", type="run-files")
            for path in files:
                artifact.add_file(str(path), name=str(_relative(path, output_dir)))
            logger.experiment.log_artifact(artifact)
        else:
            continue
        log.info("Uploaded %d files of %s to %s", len(files), output_dir, type(logger).__name__)


def _relative(path: Path, output_dir: Path) -> Path:
    """``path`` inside the run directory (a checkpoint kept elsewhere by checkpoint settings: its name)."""
    try:
        return Path(path).resolve().relative_to(output_dir.resolve())
    except ValueError:
        return Path(Path(path).name)
