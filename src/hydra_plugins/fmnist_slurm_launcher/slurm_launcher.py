"""hydra-submitit-launcher's SLURM launcher, with job states that need no SLURM accounting.

A thin adapter: ``conf/hydra/launcher/slurm.yaml`` names this class; the state polling lives in
``fmnist_lightning.sweeps.slurm_queue``. Hydra only instantiates launchers under ``hydra_plugins``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class QueueAwareSlurmLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from fmnist_lightning.sweeps.slurm_queue import watch_queue

        watch_queue()
        return super().launch(job_overrides, initial_job_idx)
