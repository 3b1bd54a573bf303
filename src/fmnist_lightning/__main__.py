"""``python -m fmnist_lightning`` / ``fmnist``: train one configuration (or a sweep with ``-m``)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config import CONF_DIR
from fmnist_lightning.errors import FmnistError

# Imported before Hydra sets up logging, so that its job_logging config replaces the console
# handlers Lightning installs at import (otherwise every Lightning message prints twice).
from fmnist_lightning.train import train

log = logging.getLogger("fmnist_lightning")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    log.info("Composed config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))
    try:
        metrics = train(cfg)
    except FmnistError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # A sweeper (e.g. Optuna) optimises the value returned here.
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    main()
