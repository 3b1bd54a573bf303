"""The short header a run prints before it trains: where it writes, what it was given, what it trains and on what.

The whole composed config goes to train.log and ``.hydra/config.yaml`` (``--cfg job`` prints it without
running); the console gets these few lines, then the progress bar, the test table and where the results are.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from fmnist_lightning.config.files import FILE_ONLY
from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.config.run_record import hydra_choices, job_overrides

log = logging.getLogger(__name__)


def _chosen(group: str, choices: dict[str, str]) -> str:
    return f" ({group}={choices[group]})" if group in choices else ""


def header_lines(cfg: DictConfig, run: Any) -> list[str]:
    """The header of a built run (``training.run_setup.Run``)."""
    choices = hydra_choices(groups=None)
    trainer, info = run.trainer, run.info
    sizes = run.datamodule.split_sizes()
    optimizer = str(cfg.optim.get("_target_", "?")).rpartition(".")[2]
    schedule = choices.get("sched", "none" if cfg.sched.get("scheduler") is None else "?")
    epochs, steps = trainer.max_epochs, trainer.max_steps
    length = f"{epochs} epoch{'s' if epochs != 1 else ''}" if steps in (-1, None) else f"{steps} steps"
    devices = (
        f"{trainer.num_devices} {trainer.strategy.root_device.type} device{'s' if trainer.num_devices > 1 else ''}"
    )
    nodes = f" x {trainer.num_nodes} nodes" if trainer.num_nodes > 1 else ""
    return [
        f"Run directory: {cfg.paths.output_dir}",
        f"Overrides: {' '.join(job_overrides()) or '(none: conf/config.yaml as it is)'}",
        f"Model: {cfg.model.name}{_chosen('model', choices)}, {info['params']:,} parameters, "
        f"{info['flops_per_image'] / 1e6:.1f} MFLOPs per image",
        f"Data: {sizes['train']:,} train / {sizes['val']:,} val / {sizes['test']:,} test images, batch "
        f"{cfg.data.batch_size}{_chosen('aug', choices)}",
        f"Training: {optimizer} at lr {cfg.optim.get('lr')}{_chosen('optim', choices)}, sched={schedule}, "
        f"{length}, seed {cfg.get('seed')}",
        f"Precision {trainer.precision} on {devices}{nodes}",
    ]


@rank_zero_only
def print_header(cfg: DictConfig, run: Any) -> None:
    """Print the header (and log it to train.log), once per run however many processes train."""
    for line in map(mask_text, header_lines(cfg, run)):  # the overrides line may hold a URL's password
        print(line, flush=True)
        log.info("%s", line, extra=FILE_ONLY)
