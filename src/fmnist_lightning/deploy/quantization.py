"""int8 copies of an ONNX model, by onnxruntime's own quantization tools."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from fmnist_lightning.deploy.runtime import INPUT_NAME, METADATA_KEY

QUANTIZE = ("dynamic", "static")


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
            quantize_static(
                str(prepared),
                str(out),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
            )
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)
    import onnx

    proto = onnx.load(str(out))
    meta = json.loads({p.key: p.value for p in onnx.load(str(fp32)).metadata_props}[METADATA_KEY])
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps({**meta, "quantized": f"int8 ({mode})"})})
    onnx.save(proto, str(out))
    return out
