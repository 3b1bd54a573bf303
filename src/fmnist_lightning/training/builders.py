"""Objects built from config nodes with ``hydra.utils.instantiate``, a constructor's complaint as one line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig

from fmnist_lightning.config.hydra_compat import ALLOWED
from fmnist_lightning.errors import ConfigError, first_line, typed_line


def build(node: Any, what: str, **kwargs: Any) -> Any:
    """``instantiate`` with a constructor's complaint about a config value turned into one ConfigError line."""
    try:
        return instantiate(node, **ALLOWED, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        reason = typed_line(cause) if cause is not None else first_line(exc)
        raise ConfigError(f"cannot build {what} from the config ({reason}); check its {what}.* values") from exc


def instantiate_group(group: DictConfig | None, what: str = "callbacks") -> list[Any]:
    """Instantiate every ``_target_`` node of a callbacks/logger group."""
    return [
        build(node, f"{what}.{name!s}", _convert_="all")
        for name, node in (group or {}).items()
        if isinstance(node, DictConfig) and "_target_" in node
    ]


def model_info(module: L.LightningModule) -> dict[str, int]:
    """Parameters and forward FLOPs for one image (Lightning's summary counts them with torch's FlopCounterMode)."""
    summary = ModelSummary(module, max_depth=0)
    return {"params": int(summary.total_parameters), "flops_per_image": int(summary.total_flops)}


# Where Lightning logs its per-Trainer info lines (the device banner, limits, tips).
LIGHTNING_INFO = "lightning.pytorch.utilities.rank_zero"


@contextmanager
def lightning_info_quiet() -> Iterator[None]:
    """Lightning's per-Trainer info lines off while a helper Trainer is built (cli.hydra_entry.quiet_lightning_info
    turns them off for a whole command)."""
    logger = logging.getLogger(LIGHTNING_INFO)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
