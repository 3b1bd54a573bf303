"""Augmentation presets: batched ops with per-image random parameters, and the per-sample torchvision path.

An ``Augmentation`` is a list of ops written in YAML (``conf/aug/``). Ops defined
here have two implementations that match in distribution:

* ``forward``: a whole float batch ``[B, C, H, W]`` in ``[0, 1]`` on the training
  device, drawing independent parameters for every image (a torchvision v2
  transform called on a batch draws one set for all of them);
* ``per_sample()``: the torchvision v2 transform applied to one uint8 image.

Any other callable in the list (for example ``torchvision.transforms.v2.RandAugment``)
runs per image inside the data loader, on uint8 ``[1, H, W]`` tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode, v2

from fmnist_lightning.errors import ConfigError


class BatchOp(nn.Module):
    """An augmentation that runs on whole batches and also has a per-sample torchvision form."""

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError


class RandomHorizontalFlip(BatchOp):
    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-1), x)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomHorizontalFlip(self.p)


class RandomVerticalFlip(RandomHorizontalFlip):
    def forward(self, x: Tensor) -> Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-2), x)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomVerticalFlip(self.p)


class RandomRotation(BatchOp):
    """Rotation by an angle drawn uniformly from ``[-degrees, degrees]``, bilinear, black fill."""

    def __init__(self, degrees: float = 10.0) -> None:
        super().__init__()
        if degrees < 0:
            raise ConfigError(f"rotation degrees must be >= 0, got {degrees}")
        self.degrees = degrees

    def forward(self, x: Tensor) -> Tensor:
        angle = (torch.rand(x.shape[0], device=x.device, dtype=x.dtype) * 2 - 1) * math.radians(self.degrees)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomRotation(self.degrees, interpolation=InterpolationMode.BILINEAR)


class Augmentation:
    """An ordered list of ops; builds the transforms for either data pipeline."""

    def __init__(self, ops: Sequence[Callable[[Tensor], Tensor]] = ()) -> None:
        self.ops = list(ops)
        for op in self.ops:
            if not callable(op):
                raise ConfigError(f"augmentation op {op!r} is not a transform; give each op a _target_")

    def __repr__(self) -> str:
        return f"Augmentation({', '.join(type(op).__name__ for op in self.ops) or 'none'})"

    def per_sample(self) -> Callable[[Tensor], Tensor] | None:
        """All ops as one torchvision transform for uint8 ``[1, H, W]`` images."""
        if not self.ops:
            return None
        return v2.Compose([op.per_sample() if isinstance(op, BatchOp) else op for op in self.ops])

    def batched(self) -> tuple[Callable[[Tensor], Tensor] | None, nn.Module | None]:
        """(per-image transform for the loader, batch module for the device).

        Ops with no batched form must come first: they run per image in the
        loader, and the batched rest runs on the device after transfer.
        """
        n_first = next((i for i, op in enumerate(self.ops) if isinstance(op, BatchOp)), len(self.ops))
        late = [op for op in self.ops[n_first:] if not isinstance(op, BatchOp)]
        if late:
            raise ConfigError(
                f"{type(late[0]).__name__} has no batched form, so it must come before the batched ops in "
                "the aug list (or use data.pipeline=per_sample)"
            )
        first, rest = self.ops[:n_first], self.ops[n_first:]
        return (v2.Compose(first) if first else None), (nn.Sequential(*rest) if rest else None)
