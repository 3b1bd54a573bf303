"""The Hydra callback that writes a sweep's summary (summary.csv, .md, .png) when a multirun ends."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.errors import FmnistError
from fmnist_lightning.results.sweep_results import COMPLETED, FAILED, PRUNED

log = logging.getLogger(__name__)

# How the last multirun of this process ended, when none of its jobs completed: the command ends with an error line
# (cli.commands.hydra_command). Hydra turns a callback's own exception into a warning, so it cannot end it here.
FAILED_SWEEP: dict[str, Any] = {}


class SweepSummary(Callback):
    """Hydra callback: writes summary.csv, summary.md and summary.png into the sweep directory."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The Optuna sweeper opens its sqlite study there before any job has created the directory.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here: every command and single run shares this Hydra config, and builds this callback at its
        # start; predict model=<file> runs without Lightning, and a config error answers before matplotlib loads.
        from lightning.pytorch.utilities import rank_zero_only

        from fmnist_lightning.results.summary_writers import write_summary

        if getattr(rank_zero_only, "rank", 0) != 0:  # Lightning sets .rank on its function
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            summary = write_summary(sweep_dir)
        except FmnistError as exc:
            log.warning("No sweep summary: %s", exc)
            return
        log.info("Sweep summary (%s) in %s", summary.counts_text(), sweep_dir)
        print(mask_text(f"Sweep summary: {summary.headline()}\n  {sweep_dir / 'summary.md'}"))
        failed = [job for job in summary.jobs if job.status == FAILED]
        if failed and not any(job.status in (COMPLETED, PRUNED) for job in summary.jobs):
            FAILED_SWEEP.update(
                jobs=len(failed),
                first=f"job {failed[0].name}: {failed[0].error}",
                bad_input=all(job.bad_input for job in failed),
                summary=sweep_dir / "summary.md",
            )
