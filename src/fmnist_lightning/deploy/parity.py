"""Whether an exported file computes what its checkpoint computes, on the official test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fmnist_lightning.data.datamodule import normalize
from fmnist_lightning.deploy.runtime import load_exported
from fmnist_lightning.errors import ExportError

def reference_probabilities(module: nn.Module, images: Tensor, mean: float, std: float, batch_size: int) -> Tensor:
    """The checkpoint's own predictions, through the LightningModule and the data pipeline's ``normalize``:
    independent of ``ServedModel``, so a wrong folded constant shows as a parity failure."""
    with torch.inference_mode():
        return torch.cat([
            module(normalize(images[i : i + batch_size], mean, std)).softmax(dim=-1)
            for i in range(0, len(images), batch_size)
        ])



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

