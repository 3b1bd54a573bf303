"""Run a model written by ``fmnist-export`` (``deploy.served_model``): ONNX on onnxruntime, a torch.export
program (``.pt2``) on ``torch.export.load``, TorchScript on torch.jit; never Lightning, and no torch for ONNX.

An exported model takes what a user has, a float32 ``[N, 1, 28, 28]`` batch in [0, 1]
(a light garment on black, as Fashion-MNIST's images), and returns class probabilities
``[N, 10]``; the run's normalisation is inside it. Its metadata (class names, the
preprocessing, the source checkpoint, its test accuracy) travels inside the file:
ONNX ``metadata_props``, the extra files of a ``.pt2`` or TorchScript archive.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fmnist_lightning.errors import CheckpointError, ConfigError, first_line

METADATA_KEY = "fmnist_lightning"
# The extra file that holds the metadata in .pt2 and TorchScript archives.
METADATA_FILE = "fmnist_lightning.json"
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
INPUT_NAME, OUTPUT_NAME = "images", "probabilities"


@dataclass
class ExportedModel:
    path: Path
    format: str
    metadata: dict[str, Any]
    run: Callable[[np.ndarray], np.ndarray]

    def probabilities(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``[N, classes]`` for float32 images ``[N, 1, 28, 28]`` in [0, 1]."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        parts = [self.run(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.metadata.get("class_names", []))), np.float32)


def format_of(path: Path) -> str:
    for name, suffix in FORMATS.items():
        if path.suffix == suffix:
            return name
    raise ConfigError(f"{path} is not an exported model: expected a .onnx, .pt2 or .pt file written by fmnist-export")


def _onnx(path: Path) -> ExportedModel:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
        raise CheckpointError(f"{path} is not a readable ONNX model ({first_line(exc)}){_hint(path)}") from exc
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    return ExportedModel(path, "onnx", _metadata(path, raw), run)


def _torchscript(path: Path) -> ExportedModel:
    import torch

    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            # torch 2.14 deprecates TorchScript; export says so once when it writes the file.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
            scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:  # torch.jit raises RuntimeError or ValueError, depending on what is wrong
        raise CheckpointError(f"{path} is not a readable TorchScript model ({first_line(exc)}){_hint(path)}") from exc
    scripted.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return scripted(torch.from_numpy(batch)).numpy()

    return ExportedModel(path, "torchscript", _metadata(path, extra[METADATA_FILE] or None), run)


def _pt2(path: Path) -> ExportedModel:
    import torch

    extra = {METADATA_FILE: ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as exc:  # torch.export raises RuntimeError, ValueError or zipfile errors for a foreign file
        reason = f"{path} is not a readable torch.export program ({first_line(exc)})"
        raise CheckpointError(reason + _hint(path)) from exc
    module = program.module()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(batch)).numpy()

    return ExportedModel(path, "pt2", _metadata(path, extra[METADATA_FILE] or None), run)


def _metadata(path: Path, raw: str | bytes | None) -> dict[str, Any]:
    if not raw:
        raise CheckpointError(
            f"{path} has no {METADATA_KEY} metadata: it was not written by fmnist_lightning.export, so its input "
            "format and classes are unknown"
        )
    return json.loads(raw)


def _hint(path: Path) -> str:
    """What to do with a file that is not the exported model its name says: a training checkpoint under another
    name is one of ours, to pass as ``ckpt_path=``; anything else is exported again."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/data.pkl") for name in archive.namelist()) and path.suffix != ".pt2":
                return f"; it is a PyTorch checkpoint: pass it as ckpt_path={path}"
    return "; export the checkpoint again with fmnist-export"


def load_exported(path: str | Path) -> ExportedModel:
    """The exported model in ``path``, ready to run; one-line errors for a missing, foreign or broken file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model={path}: no such file; pass a file that fmnist-export wrote (.onnx, .pt2 or .pt), "
            "or ckpt_path=<file.ckpt>"
        )
    return {"onnx": _onnx, "pt2": _pt2, "torchscript": _torchscript}[format_of(path)](path)
