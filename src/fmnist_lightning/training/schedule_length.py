"""How long a learning-rate schedule is planned for: ``total_steps`` from the run's length where the config leaves
it null (OneCycleLR), and the run lengths torch's OneCycleLR cannot plan, refused before the run in one line."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from fmnist_lightning.errors import ConfigError

# The run length a schedule is planned for when the optimizer and scheduler are built as a check, before
# the run (and so its number of steps) exists.
CHECK_STEPS = 1000


def check_one_cycle_phases(factory: Any, target: Any, steps: int) -> None:
    """OneCycleLR divides by zero when one of its phases has no length: on its first step when its warm-up
    (``pct_start`` of the run) is exactly one step, at the run's last step when the warm-up is the whole run
    (``pct_start=1.0``: no anneal). Refused before the run, in one line, instead of a ZeroDivisionError."""
    if not (isinstance(target, type) and issubclass(target, torch.optim.lr_scheduler.OneCycleLR)):
        return
    pct_start = getattr(factory, "keywords", {}).get(
        "pct_start", inspect.signature(target).parameters["pct_start"].default
    )
    if float(pct_start * steps) == 1.0:
        fix = f"sched.scheduler.pct_start={2 / steps:g} (two steps)" if steps > 2 else "a run of more optimizer steps"
        raise ConfigError(
            f"sched.scheduler.pct_start={pct_start} of the schedule's {steps} optimizer steps is a warm-up of exactly "
            f"one step, which torch's OneCycleLR cannot plan (it divides by zero): use {fix}"
        )
    if float(pct_start * steps) == float(steps):
        raise ConfigError(
            f"sched.scheduler.pct_start={pct_start} makes the whole schedule a warm-up, with no anneal after it, which "
            "torch's OneCycleLR cannot plan (it divides by zero at the run's last step): use a pct_start under 1, "
            "e.g. sched.scheduler.pct_start=0.3, or sched=none for a constant lr"
        )


def schedule_length(factory: Any, interval: str, run_steps: Callable[[], float] | None) -> dict[str, int]:
    """``total_steps`` for schedulers that plan the whole run (OneCycleLR) when the config leaves it null.

    The length depends on the Trainer (epochs, batches per epoch, limits, accumulation, devices),
    so it is only known once fitting starts (``run_steps``: the Trainer's estimate); a config value of
    its own would drift from the real run. ``run_steps=None``: a check before the run, which has no length yet.
    """
    target: Any = getattr(factory, "func", factory)
    try:
        takes_total_steps = "total_steps" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}
    explicit = getattr(factory, "keywords", {}).get("total_steps")
    if not takes_total_steps:
        return {}
    if explicit is not None:
        if run_steps is not None and explicit < (needed := run_steps()):
            raise ConfigError(
                f"sched.scheduler.total_steps={explicit} is shorter than this run's {needed} optimizer steps; "
                "set it to null so it is planned from the run's length"
            )
        check_one_cycle_phases(factory, target, int(explicit))  # its own length: known before the run
        return {}
    if interval != "step":
        raise ConfigError(
            f"{target.__name__} plans its schedule in optimizer steps: set sched.interval=step (got {interval!r})"
        )
    if run_steps is None:
        return {"total_steps": CHECK_STEPS}
    steps = run_steps()
    if not math.isfinite(steps):
        raise ConfigError(
            f"{target.__name__} needs a finite run to plan its schedule: set trainer.max_epochs or trainer.max_steps"
        )
    check_one_cycle_phases(factory, target, int(steps))
    return {"total_steps": int(steps)}
