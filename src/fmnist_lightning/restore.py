"""Rebuild a trained model and its data from a checkpoint alone.

Every checkpoint carries the run's resolved config (``callbacks.RunRecord``), so
evaluate and predict need nothing but the file: the backbone, the LightningModule
and the datamodule (same normalisation, same validation split) come from it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import HydraException
from hydra.utils import instantiate

from fmnist_lightning.callbacks import CONFIG_KEY
from fmnist_lightning.data import NORMALIZATION
from fmnist_lightning.errors import CheckpointError, ConfigError, DataError
from fmnist_lightning.module import fill_missing_accumulators


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint as a dict, read without running any code stored in it; one-line errors otherwise."""
    import torch

    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a checkpoint file, e.g. {path}/last.ckpt")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not a readable checkpoint (not a PyTorch checkpoint archive)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"refusing to load {path}: it holds a Python object ({unsafe.group(1)}) that would run code when "
                "unpickled; fmnist_lightning never writes such objects, so the file comes from elsewhere or was tampered with"
            ) from exc
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(exc)})") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({_first_line(exc)})") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    if not isinstance(checkpoint.get(CONFIG_KEY), dict):
        raise CheckpointError(
            f"{path} has no {CONFIG_KEY}: it was not written by a fmnist_lightning training run, "
            "so the model cannot be rebuilt from it"
        )
    return checkpoint


def run_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The training run's resolved config stored in the checkpoint."""
    return checkpoint[CONFIG_KEY]


def _build(config: dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Instantiate the checkpoint's ``config[key]``; a config this code cannot build is a CheckpointError."""
    try:
        return instantiate(config[key], **kwargs)
    except (HydraException, KeyError, TypeError, ValueError) as exc:
        # Hydra wraps the constructor's own error; that one says what is wrong.
        cause = exc.__cause__ or exc
        raise CheckpointError(f"cannot rebuild the run's {key} from the checkpoint's config: {_first_line(cause)}") from exc


def module_from_checkpoint(checkpoint: dict[str, Any]) -> L.LightningModule:
    """The LightningModule of the run, with the checkpoint's weights, in eval mode."""
    config = run_config(checkpoint)
    net = _build(config, "model")
    # The optimizer and scheduler factories are built but never called: evaluation does not train.
    module = _build(config, "module", net=net)
    fill_missing_accumulators(module, checkpoint["state_dict"])
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's weights do not fit its model config: {_first_line(exc)}") from exc
    return module.eval()


def datamodule_from_config(
    config: dict[str, Any], root: str | None = None, batch_size: int | None = None
) -> L.LightningDataModule:
    """The run's datamodule without augmentation; ``root``/``batch_size`` replace the stored values when given."""
    data = {k: v for k, v in config["data"].items() if k != "augmentation"}
    if root is not None:
        data["root"] = str(root)
    if batch_size is not None:
        data["eval_batch_size"] = int(batch_size)
    datamodule = _build({"data": data}, "data", augmentation=None)
    try:
        datamodule.prepare_data()
    except DataError as exc:
        # The message names training's data.root; these commands take the folder as data_root.
        raise DataError(f"{exc} (here: data_root=<folder>)") from exc
    return datamodule


def normalization(config: dict[str, Any]) -> tuple[float, float]:
    """(mean, std) the run's images were normalised with."""
    mode = config["data"].get("normalize", "dataset")
    if mode not in NORMALIZATION:
        raise ConfigError(f"the checkpoint's data.normalize={mode!r} is unknown; expected one of {', '.join(NORMALIZATION)}")
    return NORMALIZATION[mode]
