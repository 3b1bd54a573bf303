"""``python -m fmnist_lightning.lr_find <any training overrides>`` / ``fmnist-lr-find``: the learning-rate range test.

Composes the same root config as training, so every training override applies (``model=``,
``aug=``, ``optim=``, ``sched=``, ``data.batch_size=``, ``experiment=`` ...), builds exactly that
datamodule, backbone, LightningModule and optimizer, and runs Lightning's ``Tuner.lr_find`` on
them. Its knobs are the root config's ``lr_find:`` section, overridden like any other key:

- ``lr_find.min_lr`` / ``lr_find.max_lr`` (1e-6 / 1): the range the learning rate rises through;
- ``lr_find.num_training`` (100): optimizer steps (one batch each) the rise takes, whatever the
  run's own epochs or batch limits;
- ``lr_find.mode`` (exponential or linear);
- ``lr_find.early_stop_threshold`` (4.0): stop once the smoothed loss passes this multiple of its
  best (null: run every step).

Lightning sets the optimizer's rate itself and swaps whatever ``sched=`` gives for its own rising
schedule during the test, so ``optim.lr`` and the schedule do not matter here; the weights are
restored afterwards and not kept. Writes ``lr_find.png`` (loss against learning rate, the
suggestion marked) and ``lr_find.json`` into ``outputs/lr_find/<time>/`` (``hydra.run.dir=`` to
choose) and ends by printing the suggestion as an override: ``Suggested learning rate: optim.lr=3.02e-03``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.cli.commands import hydra_command, with_settings
from fmnist_lightning.config.checks import check_config
from fmnist_lightning.config.files import FILE_ONLY, write_text_atomic
from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.config.run_record import job_overrides
from fmnist_lightning.training.lr_range_test import RangeTest, check_settings, lr_override, run_range_test

log = logging.getLogger("fmnist_lightning")

# Its own directories, beside runs/ and multirun/, and its own --help. In a sweep, Hydra's no-op callback
# stands in for the training sweep's summary, which ranks jobs by a validation metric range tests do not have.
OWN_HYDRA_SETTINGS = {
    "hydra.run.dir": "${paths.log_dir}/lr_find/${now:%Y-%m-%d_%H-%M-%S_%f}",
    "hydra.sweep.dir": "${paths.log_dir}/lr_find/multirun/${now:%Y-%m-%d_%H-%M-%S_%f}",
    "hydra.callbacks.sweep_summary._target_": "hydra.experimental.callback.Callback",
    "hydra/help": "lr_find",
}


def find_lr(cfg: DictConfig) -> dict[str, Any]:
    """Run the range test on the composed config; write lr_find.png and lr_find.json; return the json's content."""
    from fmnist_lightning.training.precision import resolve_precision  # imports torch: after the cheap checks

    settings = cfg.lr_find
    check_settings(settings)
    check_config(cfg)
    resolve_precision(cfg)
    output_dir = Path(cfg.paths.output_dir)
    test = run_range_test(cfg, output_dir)
    result = describe(test, cfg)
    write_text_atomic(output_dir / "lr_find.json", json.dumps(result, indent=2) + "\n")
    save_lr_find_figure(test, result, output_dir / "lr_find.png")
    log.info(
        "Range test: %d steps, lr %.2e to %.2e; suggestion %s",
        len(test.lrs),
        test.lrs[0],
        test.lrs[-1],
        result["override"],
    )
    print(f"lr_find.png and lr_find.json in {output_dir}")
    print(f"Suggested learning rate: {result['override']}")
    return result


def describe(test: RangeTest, cfg: DictConfig) -> dict[str, Any]:
    """What lr_find.json holds: the suggestion, the settings, what was tested, and the curve."""
    settings = cfg.lr_find
    return {
        "suggestion": test.suggestion,
        "override": lr_override(test.suggestion),
        "overrides": job_overrides(),
        "min_lr": float(settings.min_lr),
        "max_lr": float(settings.max_lr),
        "num_training": int(settings.num_training),
        "mode": str(settings.mode),
        "early_stop_threshold": settings.early_stop_threshold,
        "steps_run": len(test.lrs),
        "model": cfg.model.get("name"),
        "optimizer": cfg.optim.get("_target_"),
        "batch_size": int(cfg.data.batch_size),
        "lrs": test.lrs,
        # JSON has no NaN: a step whose loss was not finite is null.
        "losses": [loss if math.isfinite(loss) else None for loss in test.losses],
    }


def save_lr_find_figure(test: RangeTest, result: dict[str, Any], path: Path) -> None:
    from fmnist_lightning.results.figures import lr_find_figure, save_figure  # matplotlib: only once there is a curve

    optimizer = str(result["optimizer"]).rsplit(".", 1)[-1]
    title = f"Learning-rate range test: {result['model']}, {optimizer}, batch {result['batch_size']}"
    save_figure(lr_find_figure(test.lrs, test.losses, test.suggestion, title), path)


def lr_find_command(cfg: DictConfig) -> dict[str, Any]:
    # The whole config goes to the log file only, as a training run's does (cli.console keeps it off the console).
    log.info("Composed config:\n%s", mask_text(OmegaConf.to_yaml(cfg, resolve=True)), extra=FILE_ONLY)
    return find_lr(cfg)


cli = hydra_command("config", lr_find_command, arguments=with_settings(OWN_HYDRA_SETTINGS), lightning=True)


if __name__ == "__main__":
    cli()
