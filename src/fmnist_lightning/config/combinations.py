"""Settings that each are valid but cannot work together, or that would be silently unused: refused with one line
before anything is built (``config.checks.check_config`` runs these last)."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.run_record import job_overrides
from fmnist_lightning.errors import ConfigError

PLATEAU = "torch.optim.lr_scheduler.ReduceLROnPlateau"
OFFLINE_NEEDS_TEACHER = (
    "distill.offline=true precomputes a teacher's logits, and there is no teacher: add distill.teacher=<file.ckpt> "
    "(a trained run's checkpoint), or drop distill.offline"
)
OFFLINE_AND_MIX = (
    "distill.offline=true keeps the teacher's logits for each unmixed training image, and mix blends the images: "
    "use mix=none, or distill.offline=false (the teacher then sees each mixed batch)"
)
ENSEMBLE_AND_DISTILL = (
    "distill.teacher teaches one network, and model=ensemble trains several side by side: distil into one of them "
    "(its own model, e.g. model=compact_deep), or drop distill.teacher"
)


ONE_CYCLE = "torch.optim.lr_scheduler.OneCycleLR"
COSINE = "torch.optim.lr_scheduler.CosineAnnealingLR"
# An optimizer's momentum on the command line (optim.momentum, optim.rest.momentum, optim.base.betas, ...).
MOMENTUM_KEY = re.compile(r"^optim(\.\w+)*\.(momentum|betas)$")


def check_together(cfg: DictConfig) -> None:
    """Settings that each are valid but cannot work together."""
    scheduler = OmegaConf.select(cfg, "sched.scheduler._target_", default=None)
    check_schedule(cfg, scheduler)
    check_builders(cfg)
    data = cfg.get("data") or {}
    if scheduler == PLATEAU and data.get("val_size") == 0 and data.get("folds") is None:
        raise ConfigError(
            "sched=plateau needs validation metrics but data.val_size=0; pick another sched or set data.val_size=5000"
        )
    distill = cfg.get("distill") or {}
    if distill.get("offline") and distill.get("teacher") is None:
        raise ConfigError(OFFLINE_NEEDS_TEACHER)
    if distill.get("offline") and data.get("mix") is not None:
        raise ConfigError(OFFLINE_AND_MIX)
    if distill.get("teacher") is not None and OmegaConf.select(cfg, "model.name", default=None) == "ensemble":
        raise ConfigError(ENSEMBLE_AND_DISTILL)


def check_schedule(cfg: DictConfig, scheduler: str | None) -> None:
    """A schedule that would silently overrule, or not follow, what the line asks."""
    if scheduler == ONE_CYCLE and OmegaConf.select(cfg, "sched.scheduler.cycle_momentum", default=False):
        given = [word.partition("=")[0].lstrip("+") for word in job_overrides()]
        momentum = next((key for key in given if MOMENTUM_KEY.match(key)), None)
        if momentum is not None:
            low = OmegaConf.select(cfg, "sched.scheduler.base_momentum", default=None)
            high = OmegaConf.select(cfg, "sched.scheduler.max_momentum", default=None)
            raise ConfigError(
                f"{momentum} would have no effect: the one-cycle schedule cycles the momentum (or Adam's beta1) "
                f"itself, between sched.scheduler.base_momentum={low} and sched.scheduler.max_momentum={high}; set "
                f"those instead, or add sched.scheduler.cycle_momentum=false to keep {momentum}"
            )
    unbounded = OmegaConf.select(cfg, "trainer.max_epochs", default=None) == -1 and OmegaConf.select(
        cfg, "trainer.max_steps", default=-1
    ) in (-1, None)
    if (
        scheduler == ONE_CYCLE
        and unbounded
        and OmegaConf.select(cfg, "sched.scheduler.total_steps", default=None) is None
    ):
        # training.schedule_length says the same once the Trainer exists; said here, it comes before the data.
        raise ConfigError(
            "OneCycleLR needs a finite run to plan its schedule: set trainer.max_epochs or trainer.max_steps"
        )
    if scheduler == COSINE and OmegaConf.select(cfg, "trainer.max_epochs", default=None) == -1:
        raise ConfigError(
            "sched=cosine anneals over trainer.max_epochs, and trainer.max_epochs=-1 sets no number of epochs: set "
            "trainer.max_epochs, or use sched=onecycle, which plans its steps from trainer.max_steps"
        )


def check_builders(cfg: DictConfig) -> None:
    """A node the run builds from (a callback, a logger) that has no ``_target_`` would be skipped with its keys: it
    is what ``+callbacks.ema.decay=0.99`` under ``ema=none`` makes. And ``distill`` must be the mapping it is."""
    for group in ("callbacks", "logger"):
        nodes = cfg.get(group)
        if not isinstance(nodes, DictConfig):
            continue
        for key, node in nodes.items():
            name = str(key)
            if isinstance(node, DictConfig) and "_target_" not in node:
                option = "ema=default" if (group, name) == ("callbacks", "ema") else f"the {group} option that has it"
                raise ConfigError(
                    f"{group}.{name} has no _target_, so its keys ({', '.join(map(str, node))}) would not be used: "
                    f"choose {option}, or drop the {group}.{name}.* settings"
                )
    distill = cfg.get("distill")
    if distill is not None and not isinstance(distill, DictConfig):
        raise ConfigError(
            f"distill={distill} is not an option: distillation is off while distill.teacher is null (the default); "
            "turn it on with distill.teacher=<file.ckpt>"
        )
