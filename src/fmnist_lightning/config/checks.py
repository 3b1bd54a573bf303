"""Checks of the common knobs' values, made before anything is built, so a typo'd value stops the run with
one line instead of a traceback from deep inside torch."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.errors import ConfigError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# (key, type check, type name, value check, what a valid value is, example).
VALUE_CHECKS: tuple[tuple[str, Any, str, Any, str, str], ...] = (
    ("optim.lr", is_number, "a number", lambda v: v > 0, "a learning rate > 0", "optim.lr=0.001"),
    ("optim.weight_decay", is_number, "a number", lambda v: v >= 0, "a weight decay >= 0", "optim.weight_decay=0.0005"),
    ("optim.momentum", is_number, "a number", lambda v: 0 <= v < 1, "a momentum in [0, 1)", "optim.momentum=0.9"),
    ("data.batch_size", _is_int, "an integer", lambda v: v >= 1, "a batch size >= 1", "data.batch_size=64"),
    ("data.eval_batch_size", _is_int, "an integer", lambda v: v >= 1, "a batch size >= 1", "data.eval_batch_size=512"),
    ("data.val_size", is_number, "a number", lambda v: v >= 0 and (_is_int(v) or v < 1),
     "a validation count >= 0 or a fraction in [0, 1)", "data.val_size=5000"),
    ("trainer.max_epochs", _is_int, "an integer", lambda v: v >= 1 or v == -1,
     "a number of epochs >= 1 (or -1 for no limit)", "trainer.max_epochs=10"),
    ("trainer.accumulate_grad_batches", _is_int, "an integer", lambda v: v >= 1, "an integer >= 1",
     "trainer.accumulate_grad_batches=1"),
    ("module.label_smoothing", is_number, "a number", lambda v: 0 <= v < 1, "a value in [0, 1)",
     "module.label_smoothing=0.1"),
    ("model.max_params", _is_int, "an integer", lambda v: v >= 1, "a parameter budget >= 1 (or null)",
     "model.max_params=100000"),
    ("seed", _is_int, "an integer", lambda v: True, "an integer seed (or null)", "seed=42"),
)


def check_values(cfg: DictConfig) -> None:
    """Refuse impossible or mistyped values of the common knobs, each with one line saying how to fix it."""
    for key, type_ok, type_name, value_ok, meaning, example in VALUE_CHECKS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if not type_ok(value):
            raise ConfigError(f"{key}={value!r} is {type(value).__name__}, not {type_name}: it must be {meaning}, e.g. {example}")
        if not value_ok(value):
            raise ConfigError(f"{key}={value} is impossible: it must be {meaning}, e.g. {example}")
