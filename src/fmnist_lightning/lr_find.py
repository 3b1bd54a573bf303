"""``python -m fmnist_lightning.lr_find <any training overrides>`` / ``fmnist-lr-find``: the learning-rate range test.

Composes the same config as training (so ``model=``, ``aug=``, ``optim=``, ``data.batch_size=``,
``experiment=`` ... all apply), builds exactly that datamodule, backbone, LightningModule and
optimizer, and runs Lightning's ``Tuner.lr_find`` on them: ``lr_find.num_training`` steps with
the learning rate rising from ``lr_find.min_lr`` to ``lr_find.max_lr``, stopping early when the
loss diverges. Writes ``lr_find.png`` (loss against learning rate, the suggestion marked) and
``lr_find.json`` into ``outputs/lr_find/<time>/`` and prints the suggestion as an override.
The model's weights are not kept: it is a measurement, not a training run.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config import CONF_DIR
from fmnist_lightning.errors import ConfigError, TrainingError, run_command

log = logging.getLogger("fmnist_lightning")
RUN_DIR = "hydra.run.dir=${paths.log_dir}/lr_find/${now:%Y-%m-%d_%H-%M-%S_%f}"


def lr_find_figure(lrs: list[float], losses: list[float], suggestion: float | None) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(lrs, losses, label="training loss (smoothed)")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggestion: optim.lr={suggestion:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("Learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def find_lr(cfg: DictConfig) -> dict[str, Any]:
    """Run the range test on the composed config; return what ``lr_find.json`` holds."""
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    from fmnist_lightning.config import check_values
    from fmnist_lightning.plots import save_figure
    from fmnist_lightning.train import build

    settings = cfg.lr_find
    if not 0 < settings.min_lr < settings.max_lr:
        raise ConfigError(f"lr_find.min_lr={settings.min_lr} and lr_find.max_lr={settings.max_lr}: need 0 < min_lr < max_lr")
    if settings.num_training < 10:
        raise ConfigError(f"lr_find.num_training={settings.num_training}: take at least 10 steps, e.g. 100")
    check_values(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = build(cfg.data, "data", _recursive_=True)
    datamodule.prepare_data()
    module = build(cfg.module, "module", net=build(cfg.model, "model"))
    trainer = build(cfg.trainer, "trainer", callbacks=[], logger=False, enable_checkpointing=False,
                    default_root_dir=str(output_dir), max_epochs=max(1, int(cfg.trainer.max_epochs or 1)))
    finder = Tuner(trainer).lr_find(
        module, datamodule=datamodule, min_lr=float(settings.min_lr), max_lr=float(settings.max_lr),
        num_training=int(settings.num_training), mode=str(settings.mode),
        early_stop_threshold=settings.early_stop_threshold, update_attr=False,
    )
    lrs, losses = [float(x) for x in finder.results["lr"]], [float(x) for x in finder.results["loss"]]
    finite = [loss for loss in losses if math.isfinite(loss)]
    suggestion = finder.suggestion()
    if suggestion is None or len(finite) < 10:
        raise TrainingError(
            f"the learning-rate range test found no suggestion: the loss diverged after {len(finite)} of "
            f"{settings.num_training} steps (from lr {settings.min_lr:g}); lower lr_find.min_lr, or check that "
            f"the model trains at all, e.g. python -m fmnist_lightning debug=fast_dev_run"
        )
    result = {
        "suggestion": float(suggestion), "override": f"optim.lr={suggestion:.3g}", "lrs": lrs, "losses": losses,
        "min_lr": float(settings.min_lr), "max_lr": float(settings.max_lr), "num_training": int(settings.num_training),
        "steps_run": len(lrs), "mode": str(settings.mode), "optimizer": cfg.optim.get("_target_"),
        "model": cfg.model.get("name"), "batch_size": int(cfg.data.batch_size),
    }
    (output_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
    save_figure(lr_find_figure(lrs, losses, float(suggestion)), output_dir / "lr_find.png")
    print(f"Wrote {output_dir / 'lr_find.png'} and lr_find.json")
    print(f"Suggested learning rate: {result['override']}")
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    log.info("Composed config:\n%s", OmegaConf.to_yaml(cfg.lr_find))
    run_command(find_lr, cfg)


def cli() -> None:
    """Entry point: its own output directory (outputs/lr_find/<time>) unless hydra.run.dir is given."""
    if not any(arg.startswith("hydra.run.dir=") for arg in sys.argv[1:]):
        sys.argv.append(RUN_DIR)
    main()


if __name__ == "__main__":
    cli()
