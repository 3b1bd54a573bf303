"""Experiment trackers beside TensorBoard (``logger=mlflow``, ``logger=wandb``, ``logger=many``).

Checked before anything is built, so a missing extra or an unreachable tracking server is one
``error:`` line before the first epoch rather than a traceback after it; closed when the run ends,
so job N+1 of a multirun never writes into job N's tracker run (W&B keeps one global run per
process until ``wandb.finish``).
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from fmnist_lightning.config.masking import holds_secret, mask_text
from fmnist_lightning.errors import ConfigError

log = logging.getLogger(__name__)

# Logger class -> the package it needs, and the option that picks it.
TRACKERS = {"MLFlowLogger": ("mlflow", "logger=mlflow"), "WandbLogger": ("wandb", "logger=wandb")}
EXTRA = "pip install -e '.[tracking]'"
REACH_TIMEOUT_S = 5


def check_trackers(group: DictConfig | None) -> None:
    """Refuse a tracker whose package is missing, or whose tracking server does not answer, with one line."""
    for name, node in (group or {}).items():
        if not isinstance(node, DictConfig):
            continue
        name = str(name)
        kind = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        if kind in TRACKERS:
            package, choice = TRACKERS[kind]
            if importlib.util.find_spec(package) is None:
                raise ConfigError(f"{choice} needs the {package} package, which is not installed: {EXTRA}")
        if kind == "MLFlowLogger":
            _check_mlflow(f"logger.{name}", node)


def _check_mlflow(key: str, node: DictConfig) -> None:
    uri = str(node.get("tracking_uri") or "")
    if uri.startswith("sqlite:///"):
        # SQLite creates the database file but not the folders above it.
        Path(uri.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        return
    if not uri.startswith(("http://", "https://")):
        return
    shown = mask_text(uri)
    location = node.get("artifact_location")
    if location and "://" not in str(location):
        raise ConfigError(
            f"{key}.artifact_location={location} is a folder of this machine, but the runs go to the tracking "
            f"server {shown}: other machines would not find the artifacts. Pass {key}.artifact_location=null "
            "to use the server's artifact store"
        )
    # urllib takes no user:password@ in a URL (MLflow's client, on requests, does): send it as basic auth.
    parts = urllib.parse.urlsplit(uri)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    request = urllib.request.Request(f"{bare.rstrip('/')}/health")
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"{key}.tracking_uri={shown} cannot be reached ({reason}); start the server "
            "(mlflow server --host ... --port ...), fix the address, or drop logger=mlflow"
        ) from exc
    if holds_secret(uri):
        # MLflow prints a link to each run when it ends, the URI's password in it, on stdout where no logging
        # filter reaches; close_trackers prints the link with the password masked instead.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def close_trackers(loggers: Sequence[Logger], status: str = "success") -> None:
    """Finish every logger's run with ``status`` (success, failed): flushed, and W&B's global run ended."""
    for logger in loggers:
        try:
            link = _masked_mlflow_link(logger)
            logger.finalize(status)
            if link:
                print(link, flush=True)
            if isinstance(logger, WandbLogger):
                import wandb

                wandb.finish(exit_code=0 if status == "success" else 1)
        except Exception as exc:  # noqa: BLE001 - a tracker that cannot close must not hide the run's own result or error
            log.warning("Could not close the %s logger: %s", type(logger).__name__, exc)


def _masked_mlflow_link(logger: Logger) -> str | None:
    """The link to the run that MLflow would print, the password masked (``_check_mlflow`` turned MLflow's off)."""
    if type(logger).__name__ != "MLFlowLogger":
        return None
    mlflow_logger: Any = logger  # an MLFlowLogger, whose module imports mlflow: not imported for this check
    uri = str(mlflow_logger.experiment.tracking_uri)
    if not uri.startswith(("http://", "https://")) or not holds_secret(uri):
        return None
    run = f"{mask_text(uri).rstrip('/')}/#/experiments/{mlflow_logger.experiment_id}/runs/{mlflow_logger.run_id}"
    return f"MLflow run: {run}"


def tracker_loggers(loggers: Sequence[Logger]) -> list[Any]:
    """The loggers that keep a run in a tracker (MLflow, W&B), in the run's order."""
    return [logger for logger in loggers if type(logger).__name__ in TRACKERS]
