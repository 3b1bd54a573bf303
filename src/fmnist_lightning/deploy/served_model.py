"""The model as it is served, and writing it as one ONNX, torch.export (.pt2) or TorchScript file.

The run's normalisation is folded in front of the backbone and a softmax behind it, so the
file takes a float32 ``[N, 1, 28, 28]`` batch in [0, 1] (any N) and returns class
probabilities. Class names, the preprocessing, the source checkpoint and its test accuracy
travel inside the file (``deploy.runtime`` reads them back).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, IMAGE_SIZE
from fmnist_lightning.deploy.runtime import INPUT_NAME, METADATA_FILE, METADATA_KEY, OUTPUT_NAME
from fmnist_lightning.errors import ExportError, first_line

log = logging.getLogger("fmnist_lightning")

PREPROCESSING = (
    f"float32 [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] in [0, 1]: grey, a light garment on a black background, "
    "fitted into the frame keeping its aspect ratio (as Fashion-MNIST's images); the training normalisation is inside"
)


class ServedModel(nn.Module):
    """The backbone as it is served: [0, 1] images in, probabilities out, normalisation folded in."""

    mean: Tensor  # buffers: in the exported graph as constants
    std: Tensor

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std).softmax(dim=-1)


def export_onnx(
    model: ServedModel, path: Path, opset: int, metadata: dict[str, Any], opset_chosen: bool = False
) -> None:
    """An ONNX file at ``opset``. ``opset_chosen``: the user asked for that opset (``opset=7``), so an exporter that
    cannot write it is bad input; on the default, the exporter's error is a failure, raised as it is."""
    import onnx

    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    try:
        torch.onnx.export(
            # external_data=False: the weights inside the one file (fine under ONNX's 2 GB limit), no .data beside it.
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            opset_version=opset,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        )
    except Exception as exc:  # the exporter raises its own error types (torch.onnx.OnnxExporterError, ...)
        if not opset_chosen:
            raise
        raise ExportError(
            f"ONNX export with opset={opset} failed: {first_line(exc)}; leave opset out: the default (export.yaml) "
            "is the one tested"
        ) from exc
    proto = onnx.load(str(path))
    written = [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")]
    if written != [opset]:
        path.unlink()
        wrote = f"it wrote opset {written[0]}" if written else "it wrote no opset"
        if not opset_chosen or not written:
            raise RuntimeError(f"torch's ONNX exporter did not write opset {opset} ({wrote})")  # a failure
        newer = opset > written[0]
        way_out = f"leave it out, or use opset={written[0]}" if newer else f"use opset={written[0]} or newer"
        raise ExportError(f"opset={opset} cannot be written by torch's ONNX exporter ({wrote}); {way_out}")
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    onnx.save(proto, str(path))


def export_pt2(model: ServedModel, path: Path, metadata: dict[str, Any]) -> None:
    """A ``torch.export`` program with a dynamic batch axis, loadable with ``torch.export.load``."""
    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    try:
        program = torch.export.export(model, (example,), dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    except Exception as exc:  # torch.export raises its own error types for code it cannot trace
        raise ExportError(f"torch.export failed: {first_line(exc)}; export with format=onnx instead") from exc
    torch.export.save(program, str(path), extra_files={METADATA_FILE: json.dumps(metadata)})


def export_torchscript(model: ServedModel, path: Path, metadata: dict[str, Any]) -> None:
    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # torch 2.14 deprecates TorchScript in favour of torch.export; said once below, not three times.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
        scripted = torch.jit.trace(model, example)
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    log.warning("TorchScript is deprecated in torch 2.14; format=onnx is the maintained way to serve")


def served_metadata(
    model: str,
    mean: float,
    std: float,
    source: Path,
    test_accuracy: float,
    test_images: int,
    source_run: dict[str, Any],
) -> dict[str, Any]:
    """What an exported file says of itself (stored inside it, and in export.json); ``source_run`` is the
    training run's commit and precision."""
    return {
        "class_names": list(CLASS_NAMES),
        "input": PREPROCESSING,
        "output": f"float32 [N, {len(CLASS_NAMES)}] class probabilities (softmax), in class_names order",
        "normalization": {"mean": mean, "std": std},
        "source_checkpoint": str(source),
        "model": model,
        "test_accuracy": test_accuracy,
        "test_images": test_images,
        "source_run": source_run,
    }
