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
        return torch.cat(
            [
                module(normalize(images[i : i + batch_size], mean, std)).softmax(dim=-1)
                for i in range(0, len(images), batch_size)
            ]
        )


def parity(exported: Path, images: np.ndarray, reference: np.ndarray, atol: float) -> dict[str, Any]:
    """How the exported file's predictions on ``images`` compare with ``reference`` (the checkpoint's).

    A top-1 class that differs counts against the file only where the checkpoint itself ranks its top two
    classes more than ``atol`` apart: where they are within ``atol`` (a near-tie), float rounding alone may
    order them either way, and such images are counted apart (``near_ties``). The probabilities must agree
    within ``atol`` on every image all the same.
    """
    probs = load_exported(exported).probabilities(images)
    disagree = probs.argmax(1) != reference.argmax(1)
    top_two = np.sort(reference, axis=1)[:, -2:] if len(reference) else np.zeros((0, 2))
    near_tie = disagree & (top_two[:, 1] - top_two[:, 0] <= atol)
    differ = int((disagree & ~near_tie).sum())
    max_diff = float(np.abs(probs - reference).max()) if len(probs) else 0.0
    return {
        "images": len(images),
        "top1_differ": differ,
        "near_ties": int(near_tie.sum()),
        "max_abs_prob_diff": max_diff,
        "atol": atol,
        "ok": differ == 0 and max_diff <= atol,
        "probs": probs,
    }


def check_parity(exported: Path, images: np.ndarray, reference: np.ndarray, atol: float) -> dict[str, Any]:
    """``parity``, raising one ExportError line when the exported file does not behave like the checkpoint."""
    result = parity(exported, images, reference, atol)
    if not result["ok"]:
        ties = f" (besides {result['near_ties']} near-ties)" if result["near_ties"] else ""
        raise ExportError(
            f"parity check failed for {exported}: {result['top1_differ']} of {result['images']} test images get "
            "another "
            f"top-1 class{ties} and the largest probability difference is {result['max_abs_prob_diff']:.2e} (allowed "
            f"{atol:g}); the file does not compute what the checkpoint computes"
        )
    return result
