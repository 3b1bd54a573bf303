"""Test-time augmentation views (``module.tta``, ``module.tta_shift``): the image, its mirror image and,
with a shift, both translated diagonally by that many pixels each way (airbench's multi-crop TTA)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def translate(x: Tensor, dy: int, dx: int) -> Tensor:
    """``x`` ([..., H, W]) moved ``dy`` pixels down and ``dx`` right; the edge pixels fill the gap (a
    Fashion-MNIST border is background, whatever the normalisation made of it)."""
    if dy == dx == 0:
        return x
    s = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    padded = F.pad(x, [s, s, s, s], mode="replicate")
    return padded[..., s - dy : s - dy + h, s - dx : s - dx + w]


def tta_views(x: Tensor, shift: int = 0) -> list[Tensor]:
    """The views whose class probabilities are averaged: 2 (image, mirror) or, with ``shift``, 6."""
    if shift < 0:
        raise ValueError(f"module.tta_shift must be >= 0, got {shift}")
    mirrored = x.flip(-1)
    views = [x, mirrored]
    if shift:
        views += [translate(v, d, d) for v in (x, mirrored) for d in (-shift, shift)]
    return views
