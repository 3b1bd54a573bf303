"""``python -m fmnist_lightning.export ckpt_path=<file.ckpt> format=onnx|torchscript`` / ``fmnist-export``.

Writes the checkpoint's model as one file that serves without this project: the
run's normalisation folded in front of the backbone and a softmax behind it, so it
takes a float32 ``[N, 1, 28, 28]`` batch in [0, 1] (any N) and returns class
probabilities. Class names, the preprocessing, the source checkpoint and its test
accuracy travel inside the file. Before anything is declared done, the exported file
is run (onnxruntime / the TorchScript loader) on the official test images and must
agree with the checkpoint on every top-1 class, with probabilities within ``atol``;
the result goes to ``export.json``. ``quantize=dynamic|static`` adds an int8 ONNX copy
(onnxruntime's quantization tools; static is calibrated on training images) with its
accuracy change and size.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from fmnist_lightning import evaluation, restore
from fmnist_lightning.data import normalize
from fmnist_lightning.errors import ConfigError, FmnistError
from fmnist_lightning.exported import (
    FORMATS,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_NAME,
    TORCHSCRIPT_METADATA_FILE,
    load_exported,
)
from fmnist_lightning.fashion_mnist import CLASS_NAMES, IMAGE_SIZE

log = logging.getLogger("fmnist_lightning")

PREPROCESSING = (
    f"float32 [N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}] in [0, 1]: grey, a light garment on a black background, "
    "fitted into the frame keeping its aspect ratio (as Fashion-MNIST's images); the training normalisation is inside"
)
QUANTIZE = ("dynamic", "static")


class ExportError(FmnistError):
    """The model could not be exported, or the exported file does not behave like the checkpoint."""


class ServedModel(nn.Module):
    """The backbone as it is served: [0, 1] images in, probabilities out, normalisation folded in."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std).softmax(dim=-1)


def reference_probabilities(module: nn.Module, images: Tensor, mean: float, std: float, batch_size: int) -> Tensor:
    """The checkpoint's own predictions, through the LightningModule and the data pipeline's ``normalize``:
    independent of ``ServedModel``, so a wrong folded constant shows as a parity failure."""
    with torch.inference_mode():
        return torch.cat([
            module(normalize(images[i : i + batch_size], mean, std)).softmax(dim=-1)
            for i in range(0, len(images), batch_size)
        ])


def export_onnx(model: ServedModel, path: Path, opset: int, metadata: dict[str, Any]) -> None:
    import onnx

    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    try:
        torch.onnx.export(
            model, (example,), str(path), dynamo=True, opset_version=opset, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        )
    except Exception as exc:  # the exporter raises its own error types (torch.onnx.OnnxExporterError, ...)
        raise ExportError(f"ONNX export with opset {opset} failed: {str(exc).strip().splitlines()[0]}; "
                          "the default opset (export.yaml) is known to work") from exc
    proto = onnx.load(str(path))
    written = [op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")]
    if written != [opset]:
        path.unlink()
        raise ExportError(f"opset={opset} cannot be written by torch's ONNX exporter (it wrote opset {written[0]}); "
                          f"use opset={written[0]} or newer")
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    onnx.save(proto, str(path))


def export_torchscript(model: ServedModel, path: Path, metadata: dict[str, Any]) -> None:
    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():
        # torch 2.14 deprecates TorchScript in favour of torch.export; said once below, not three times.
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.\w+` is deprecated", category=FutureWarning)
        scripted = torch.jit.trace(model, example)
        torch.jit.save(scripted, str(path), _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})
    log.warning("TorchScript is deprecated in torch 2.14; format=onnx is the maintained way to serve")


def parity(exported: Path, images: np.ndarray, reference: np.ndarray, atol: float) -> dict[str, Any]:
    """How the exported file's predictions on ``images`` compare with ``reference`` (the checkpoint's)."""
    probs = load_exported(exported).probabilities(images)
    differ = int((probs.argmax(1) != reference.argmax(1)).sum())
    max_diff = float(np.abs(probs - reference).max()) if len(probs) else 0.0
    return {"images": len(images), "top1_differ": differ, "max_abs_prob_diff": max_diff, "atol": atol,
            "ok": differ == 0 and max_diff <= atol, "probs": probs}


def check_parity(exported: Path, images: np.ndarray, reference: np.ndarray, atol: float) -> dict[str, Any]:
    """``parity``, raising one ExportError line when the exported file does not behave like the checkpoint."""
    result = parity(exported, images, reference, atol)
    if not result["ok"]:
        raise ExportError(
            f"parity check failed for {exported}: {result['top1_differ']} of {result['images']} test images get another "
            f"top-1 class and the largest probability difference is {result['max_abs_prob_diff']:.2e} (allowed "
            f"{atol:g}); the file does not compute what the checkpoint computes"
        )
    return result


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over training images."""

    def __init__(self, images: np.ndarray, batch_size: int = 100) -> None:
        self.batches = iter([{INPUT_NAME: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize(fp32: Path, mode: str, calibration: np.ndarray) -> Path:
    """An int8 copy of the ONNX model beside it, by onnxruntime's own quantization tools."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = fp32.with_name(f"{fp32.stem}.int8-{mode}.onnx")
    prepared = fp32.with_name(f"{fp32.stem}.prepared.onnx")
    # Shape inference and graph fusions first, as onnxruntime recommends before quantizing.
    quant_pre_process(str(fp32), str(prepared))
    root = logging.getLogger()
    level = root.level
    # onnxruntime's quantizer logs a line per tensor on the root logger.
    root.setLevel(logging.WARNING)
    try:
        if mode == "dynamic":
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
        else:
            quantize_static(str(prepared), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    import onnx

    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in onnx.load(str(fp32)).metadata_props}[METADATA_KEY])
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps({**meta, "quantized": f"int8 ({mode})"})})
    onnx.save(proto, str(out))
    return out


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, verify and describe one checkpoint; returns what ``export.json`` holds."""
    started = time.perf_counter()
    for name in ("onnxscript", "onnx_ir", "onnxruntime"):
        # The exporter's and quantizer's step-by-step INFO lines are noise in a command's output.
        logging.getLogger(name).setLevel(logging.WARNING)
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required: python -m fmnist_lightning.export ckpt_path=<file.ckpt> format=onnx")
    if cfg.format not in FORMATS:
        raise ConfigError(f"unknown format={cfg.format!r}; choose one of: {', '.join(FORMATS)}")
    if cfg.quantize is not None and (cfg.quantize not in QUANTIZE or cfg.format != "onnx"):
        raise ConfigError(f"quantize={cfg.quantize!r}: choose one of {', '.join(QUANTIZE)}, with format=onnx")
    checkpoint = restore.load_checkpoint(cfg.ckpt_path)
    config = restore.run_config(checkpoint)
    module = restore.module_from_checkpoint(checkpoint)
    mean, std = restore.normalization(config)
    datamodule = restore.datamodule_from_config(config, root=cfg.data_root)
    datamodule.setup("test")
    images = datamodule.test_set.images.float() / 255
    labels = datamodule.test_set.labels.numpy()
    reference = reference_probabilities(module, images, mean, std, int(cfg.batch_size)).numpy()

    out_dir = Path(cfg.out).expanduser() if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = str(config.get("model", {}).get("name") or "model")
    path = out_dir / f"{name}{FORMATS[cfg.format]}"
    test_accuracy = _accuracy(reference, labels)
    metadata = {
        "class_names": list(CLASS_NAMES),
        "input": PREPROCESSING,
        "output": f"float32 [N, {len(CLASS_NAMES)}] class probabilities (softmax), in class_names order",
        "normalization": {"mean": mean, "std": std},
        "source_checkpoint": str(Path(cfg.ckpt_path).expanduser().resolve()),
        "model": name,
        "test_accuracy": test_accuracy,
        "test_images": len(labels),
    }
    served = ServedModel(module.net, mean, std).eval()
    if cfg.format == "onnx":
        export_onnx(served, path, int(cfg.opset), metadata)
    else:
        export_torchscript(served, path, metadata)

    x = images.numpy()
    try:
        result = check_parity(path, x, reference, float(cfg.atol))
    except ExportError:
        # A file that does not compute what the checkpoint computes is not left where it could be served.
        path.unlink(missing_ok=True)
        raise
    summary: dict[str, Any] = {
        "file": str(path), "format": cfg.format, "bytes": path.stat().st_size, "metadata": metadata,
        "opset": int(cfg.opset) if cfg.format == "onnx" else None,
        "parity": {k: v for k, v in result.items() if k != "probs"},
    }
    print(f"Exported {path} ({path.stat().st_size:,} bytes); parity on {len(x):,} test images: "
          f"top-1 identical, max |dp| {result['max_abs_prob_diff']:.1e}; test accuracy {test_accuracy:.4f}")

    if cfg.quantize:
        train_images = _calibration_images(config, cfg)
        int8 = quantize(path, cfg.quantize, train_images)
        quantized = parity(int8, x, reference, float(cfg.atol))
        int8_accuracy = _accuracy(quantized["probs"], labels)
        summary["quantized"] = {
            "file": str(int8), "mode": cfg.quantize, "bytes": int8.stat().st_size,
            "size_ratio": int8.stat().st_size / path.stat().st_size,
            "test_accuracy": int8_accuracy, "accuracy_change": int8_accuracy - test_accuracy,
            "top1_differ_from_checkpoint": quantized["top1_differ"],
            "calibration_images": len(train_images) if cfg.quantize == "static" else 0,
        }
        print(f"int8 ({cfg.quantize}): {int8} ({int8.stat().st_size:,} bytes, {summary['quantized']['size_ratio']:.0%} "
              f"of fp32); test accuracy {int8_accuracy:.4f} ({int8_accuracy - test_accuracy:+.4f})")
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    (out_dir / "export.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"Wrote {out_dir / 'export.json'}")
    return summary


def _calibration_images(config: dict[str, Any], cfg: DictConfig) -> np.ndarray:
    """The first ``calibration_images`` training images of the run's own training split, as [0, 1] floats."""
    datamodule = restore.datamodule_from_config(config, root=cfg.data_root)
    datamodule.setup("fit")
    images = datamodule.train_set.images[: int(cfg.calibration_images)]
    return (images.float() / 255).numpy()


main = evaluation.checkpoint_command("export", export)


if __name__ == "__main__":
    main()
