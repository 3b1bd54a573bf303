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
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config import CONF_DIR, job_overrides
from fmnist_lightning.errors import ConfigError, TrainingError, run_command, run_hydra

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger("fmnist_lightning")

# Its own directories, beside runs/ and multirun/. In a sweep, Hydra's no-op callback stands in for the
# training sweep's summary, which ranks jobs by a validation metric range tests do not have.
OWN_HYDRA_SETTINGS = {
    "hydra.run.dir": "${paths.log_dir}/lr_find/${now:%Y-%m-%d_%H-%M-%S_%f}",
    "hydra.sweep.dir": "${paths.log_dir}/lr_find/multirun/${now:%Y-%m-%d_%H-%M-%S_%f}",
    "hydra.callbacks.sweep_summary._target_": "hydra.experimental.callback.Callback",
}
MODES = ("exponential", "linear")
# Lightning's suggestion skips the first 10 and the last loss and needs two finite ones between.
SKIP_BEGIN, SKIP_END = 10, 1
MIN_STEPS = 20


def lr_override(lr: float) -> str:
    """The suggestion as a command-line override, e.g. ``optim.lr=3.02e-03``."""
    return f"optim.lr={lr:.2e}"


def check_settings(settings: DictConfig) -> None:
    """Refuse an impossible ``lr_find:`` section before anything is built."""
    min_lr, max_lr = settings.min_lr, settings.max_lr
    if not (isinstance(min_lr, (int, float)) and isinstance(max_lr, (int, float)) and 0 < min_lr < max_lr):
        raise ConfigError(f"lr_find.min_lr={min_lr} and lr_find.max_lr={max_lr}: need 0 < min_lr < max_lr, "
                          "e.g. lr_find.min_lr=1e-6 lr_find.max_lr=1")
    if not isinstance(settings.num_training, int) or settings.num_training < MIN_STEPS:
        raise ConfigError(f"lr_find.num_training={settings.num_training}: the suggestion ignores the first "
                          f"{SKIP_BEGIN} steps, so take at least {MIN_STEPS}, e.g. lr_find.num_training=100")
    if settings.mode not in MODES:
        raise ConfigError(f"lr_find.mode={settings.mode}: pick one of {', '.join(MODES)}")
    threshold = settings.early_stop_threshold
    if threshold is not None and not (isinstance(threshold, (int, float)) and threshold > 1):
        raise ConfigError(f"lr_find.early_stop_threshold={threshold}: a multiple of the best loss > 1, "
                          "e.g. 4.0, or null to run every step")


def no_suggestion_reason(lrs: list[float], losses: list[float], settings: DictConfig) -> str | None:
    """Why these results give no suggestion (one line saying what to try), or None when they give one."""
    if sum(math.isfinite(loss) for loss in losses[SKIP_BEGIN:-SKIP_END]) >= 2:
        return None
    first_bad = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), None)
    if first_bad is not None and first_bad <= SKIP_BEGIN:
        what = (f"the training loss was not finite from step {first_bad + 1} (lr {lrs[first_bad]:.2e}); lower "
                f"lr_find.min_lr (now {settings.min_lr:g}), and if the loss is NaN even then, check that the model "
                "trains at all: python -m fmnist_lightning debug=fast_dev_run")
    elif lrs:
        what = (f"the loss diverged after {len(losses)} of {settings.num_training} steps (lr {lrs[-1]:.2e} when it "
                f"stopped); lower lr_find.min_lr (now {settings.min_lr:g}) or take more steps with "
                "lr_find.num_training")
    else:
        what = "no training step ran; check trainer.limit_train_batches and the data"
    return f"the learning-rate range test found no suggestion: {what}"


def lr_find_figure(lrs: list[float], losses: list[float], suggestion: float, title: str) -> Figure:
    """Smoothed training loss against learning rate on a log axis, the suggestion marked and labelled."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    # Lightning's bias correction of its running mean is one step off (it divides by 1 - 0.98^(n+1) after
    # n steps): the curve starts at about half the real loss and climbs to it over a few dozen steps, which
    # reads as a loss that rises at tiny rates. The first steps, which the suggestion ignores, are greyed.
    ax.plot(lrs[: SKIP_BEGIN + 1], losses[: SKIP_BEGIN + 1], color="0.7",
            label=f"first {SKIP_BEGIN} steps (smoothing warm-up, not used)")
    ax.plot(lrs[SKIP_BEGIN:], losses[SKIP_BEGIN:], color="tab:blue", label="training loss (smoothed)")
    at = min(range(len(lrs)), key=lambda i: abs(lrs[i] - suggestion))
    ax.axvline(suggestion, color="tab:red", linestyle="--", linewidth=1)
    ax.plot([suggestion], [losses[at]], "o", color="tab:red", label=f"suggestion: {lr_override(suggestion)}")
    ax.annotate(f"{suggestion:.2e}", (suggestion, losses[at]), xytext=(8, 8), textcoords="offset points",
                color="tab:red")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return fig


def find_lr(cfg: DictConfig) -> dict[str, Any]:
    """Run the range test on the composed config; write lr_find.png and lr_find.json; return the json's content."""
    # Imported here, after Hydra set up logging (see __main__), and so that a bad lr_find value
    # answers without the import of torch and Lightning.
    import lightning as L
    from lightning.pytorch.tuner import Tuner

    from fmnist_lightning.config import check_values
    from fmnist_lightning.hardware import resolve_precision
    from fmnist_lightning.plots import save_figure
    from fmnist_lightning.train import build

    settings = cfg.lr_find
    check_settings(settings)
    check_values(cfg)
    resolve_precision(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    datamodule: L.LightningDataModule = build(cfg.data, "data", _recursive_=True)
    # Read (and validate) the data first, as training does, so bad data stops here with its own error line.
    datamodule.prepare_data()
    datamodule.setup("fit")
    module: L.LightningModule = build(cfg.module, "module", net=build(cfg.model, "model"))
    # The test's own length, not the run's epochs: max_steps also gives a schedule that plans the
    # whole run (onecycle) a finite length to be built with before Lightning swaps it out.
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=[], logger=False, enable_checkpointing=False,
                               enable_model_summary=False, max_epochs=-1, max_steps=int(settings.num_training),
                               default_root_dir=str(output_dir))
    if trainer.fast_dev_run:
        raise ConfigError("fast_dev_run skips the learning-rate range test; "
                          "drop debug=fast_dev_run / trainer.fast_dev_run")
    if trainer.world_size > 1:
        raise ConfigError(f"the range test runs in one process, not {trainer.world_size}: pass trainer.devices=1 "
                          "(DDP trains on devices x data.batch_size images a step; test at that data.batch_size)")
    output_dir.mkdir(parents=True, exist_ok=True)  # the finder keeps its temporary checkpoint there
    finder = Tuner(trainer).lr_find(
        module, datamodule=datamodule, min_lr=float(settings.min_lr), max_lr=float(settings.max_lr),
        num_training=int(settings.num_training), mode=str(settings.mode),
        early_stop_threshold=settings.early_stop_threshold,
        # The suggestion is printed for the user to pass as optim.lr, not set on a module that is thrown away.
        update_attr=False,
    )
    lrs = [float(x) for x in finder.results["lr"]]
    losses = [float(x) for x in finder.results["loss"]]
    # Checked before asking Lightning, which would log an error line of its own.
    reason = no_suggestion_reason(lrs, losses, settings)
    if reason:
        raise TrainingError(reason)
    suggestion = float(finder.suggestion(skip_begin=SKIP_BEGIN, skip_end=SKIP_END))

    result: dict[str, Any] = {
        "suggestion": suggestion,
        "override": lr_override(suggestion),
        "overrides": job_overrides(),
        "min_lr": float(settings.min_lr),
        "max_lr": float(settings.max_lr),
        "num_training": int(settings.num_training),
        "mode": str(settings.mode),
        "early_stop_threshold": settings.early_stop_threshold,
        "steps_run": len(lrs),
        "model": cfg.model.get("name"),
        "optimizer": cfg.optim.get("_target_"),
        "batch_size": int(cfg.data.batch_size),
        "lrs": lrs,
        # JSON has no NaN: a step whose loss was not finite is null.
        "losses": [loss if math.isfinite(loss) else None for loss in losses],
    }
    (output_dir / "lr_find.json").write_text(json.dumps(result, indent=2) + "\n")
    optimizer = str(result["optimizer"]).rsplit(".", 1)[-1]
    title = f"Learning-rate range test: {result['model']}, {optimizer}, batch {result['batch_size']}"
    save_figure(lr_find_figure(lrs, losses, suggestion, title), output_dir / "lr_find.png")
    log.info("Range test: %d steps, lr %.2e to %.2e; suggestion %s", len(lrs), lrs[0], lrs[-1], result["override"])
    print(f"lr_find.png and lr_find.json in {output_dir}")
    print(f"Suggested learning rate: {result['override']}")
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    log.info("Composed config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    run_command(find_lr, cfg)


def cli() -> None:
    """Entry point: the root config with its own output directories unless the command line names them."""
    given = {arg.partition("=")[0].lstrip("+~") for arg in sys.argv[1:]}
    sys.argv += [f"{key}={value}" for key, value in OWN_HYDRA_SETTINGS.items() if key not in given]
    run_hydra(main)


if __name__ == "__main__":
    cli()
