"""``python -m fmnist_lightning.evaluate ckpt_path=<file>`` / ``fmnist-evaluate``: evaluate a checkpoint.

Rebuilds the model and data from the config stored in the checkpoint, predicts the
test set (or the run's validation split) through a Lightning Trainer, prints the
metrics and writes report.md, metrics.json and the figures into its own directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.cli.commands import hydra_command
from fmnist_lightning.config.checks import check_values, whole
from fmnist_lightning.config.files import METRICS_FILE, write_json
from fmnist_lightning.errors import ConfigError

log = logging.getLogger("fmnist_lightning")

# null leaves each to the run's own setting.
OPTION_CHECKS = (
    whole("batch_size", 1, "a batch size >= 1 (or null: the run's own)", "batch_size=512"),
    whole("tta_shift", 0, "a shift in pixels >= 0 (or null: the run's own)", "tta_shift=1"),
)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.split``; write the report into ``cfg.paths.output_dir``; return the
    metrics."""
    # Imported here, once Hydra has parsed the command line: --help and a config error answer without torch's
    # seconds of import, and a broken torch install is one error line too.
    from fmnist_lightning.results.report import RunFacts, checkpoint_facts, csv_log_path, format_summary, write_report
    from fmnist_lightning.results.split_metrics import check_split, evaluate_split, prediction_trainer
    from fmnist_lightning.training.checkpoint_files import restore_run

    started = time.perf_counter()
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("no checkpoint given: python -m fmnist_lightning.evaluate ckpt_path=<file.ckpt>")
    # Checked before the checkpoint is loaded, so a typo fails at once.
    check_split(cfg.split)
    check_values(cfg, OPTION_CHECKS)
    shift, batch_size = cfg.get("tta_shift"), cfg.batch_size  # checked above; a string of digits from ${oc.env:...} too
    run = restore_run(cfg.ckpt_path, tta=cfg.tta, tta_shift=None if shift is None else int(shift))
    datamodule = run.datamodule(root=cfg.data_root, batch_size=None if batch_size is None else int(batch_size))
    trainer = prediction_trainer(accelerator=cfg.accelerator, precision=cfg.precision or run.precision)
    result = evaluate_split(run.module, datamodule, cfg.split, trainer)

    output_dir = Path(cfg.paths.output_dir)
    facts = RunFacts(
        title=f"Evaluation of {Path(cfg.ckpt_path).name}",
        config=run.config,
        checkpoint=str(run.path.resolve()),
        epoch_label="checkpoint epoch",
        tta=run.module.tta,
        history_csv=csv_log_path(run.config),
        **checkpoint_facts(run.checkpoint),
    )
    facts.wall_time_s = time.perf_counter() - started
    report = write_report(output_dir, result, facts)
    metrics = {
        **result.as_dict(),
        "split": cfg.split,
        "tta": run.module.tta,
        "tta_shift": run.module.tta_shift if run.module.tta else 0,
        # What the figures were computed at (precision=auto resolves per machine), as a training run's record has it.
        "precision": str(trainer.precision),
        "ckpt_path": facts.checkpoint,
        "wall_time_s": round(facts.wall_time_s, 2),
    }
    write_json(output_dir / METRICS_FILE, metrics)
    print(format_summary(result, facts))
    print(f"\nWrote {report}, metrics.json and the figures in {output_dir}")
    return metrics


# Lightning's per-Trainer info lines are noise in a command's output.
cli = hydra_command("evaluate", evaluate, quiet_trainers=True)


if __name__ == "__main__":
    cli()
