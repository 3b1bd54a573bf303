"""DDP under Hydra: a DDP job of a multirun runs as a single run in a fresh process.

Lightning's DDP (``strategy=ddp``, start method popen) makes the current process rank 0
and starts ranks 1..N-1 by re-running the command line, adding ``hydra.run.dir`` so they
share the run directory. That is right for a single run. For a job of a multirun it is
not: the command line is the whole sweep (``-m`` and every swept value), so each extra
process would start a sweep of its own in new directories; and the sweep process, once
rank 0, keeps its process group and DDP environment variables, so the next job would
wait for ranks that never come. Such a job therefore re-runs itself as a single run (its
own overrides, in its own directory) in a fresh process, where Lightning's DDP works as
designed, and returns that run's metrics. Ranks that a cluster starts itself (SLURM
tasks, torchrun) are left alone.
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

from fmnist_lightning.config.files import METRICS_FILE, STATUS_FILE
from fmnist_lightning.errors import TrainingError

log = logging.getLogger(__name__)


def in_sweep() -> bool:
    """True inside a job of a multirun (any launcher), False for a single run or outside Hydra."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def relaunches_command(trainer: L.Trainer) -> bool:
    """True when this multirun job's strategy would start its ranks by re-running the command line."""
    if not in_sweep():
        return False
    launcher = trainer.strategy.launcher
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and not launcher.cluster_environment.creates_processes_externally
    )


def single_run_command(output_dir: Path) -> list[str]:
    """``python -m fmnist_lightning`` with this job's composition, as a single run in ``output_dir``."""
    hydra_cfg = HydraConfig.get()
    command = [sys.executable, "-m", "fmnist_lightning", f"--config-name={hydra_cfg.job.config_name}"]
    command += [
        f"--config-dir={source.path}"
        for source in hydra_cfg.runtime.config_sources
        if source.provider == "command-line"
    ]
    command += [str(arg) for arg in hydra_cfg.overrides.task]
    # Quoted as Lightning quotes it for its own ranks; output_subdir=null keeps the job's .hydra as the sweep wrote it.
    command += [f'hydra.run.dir="{output_dir}"', "hydra.output_subdir=null"]
    return command


def run_in_own_process(output_dir: Path) -> dict[str, Any]:
    """Run this job as a single run in a fresh process (see the module docstring); return its metrics."""
    command = single_run_command(output_dir)
    log.info("DDP job of a multirun: running it as a single run in its own process:\n  %s", shlex.join(command))
    returncode = subprocess.run(command, cwd=get_original_cwd(), check=False).returncode
    metrics_file = output_dir / METRICS_FILE
    if returncode != 0 or not metrics_file.is_file():
        status_file = output_dir / STATUS_FILE
        error = json.loads(status_file.read_text()).get("error") if status_file.is_file() else None
        raise TrainingError(f"the job's DDP run exited with status {returncode}: {error or 'see its train.log'}")
    return json.loads(metrics_file.read_text())
