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

IMAGE_HW = (28, 28)


def non_negative(value: float, what: str) -> float:
    """``value``, refused with one line when it is negative (a size or an angle in an op's config)."""
    if value < 0:
        raise ConfigError(f"{what} must be >= 0, got {value}")
    return value


class BatchOp(nn.Module):
    """An augmentation that runs on whole batches and also has a per-sample torchvision form."""

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError


class RandomHorizontalFlip(BatchOp):
    axis = -1  # image width

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(self.axis), x)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomHorizontalFlip(self.p)


class AlternatingFlip(RandomHorizontalFlip):
    """Horizontal flip of half the images each epoch, and of the other half the next (airbench's
    "alternating flip"): every image is seen both ways within any two epochs, where a random flip
    leaves a quarter of them one way round for both.

    Which half comes from the image itself (a fixed hash of its pixels), so no index is needed; the
    op must see the images as loaded: put it first in the ``ops`` list. The datamodule sets ``epoch``
    before each training batch. In the per-sample pipeline (data.pipeline=per_sample) it is a random
    flip, the same in distribution for any one epoch: one image alone does not know its epoch.
    """

    weights: Tensor  # a buffer: moves with the module, never saved

    def __init__(self) -> None:
        super().__init__(p=0.5)
        self.epoch = 0
        weights = torch.randint(1, 2**20, (1 * IMAGE_HW[0] * IMAGE_HW[1],), generator=torch.Generator().manual_seed(0))
        self.register_buffer("weights", weights, persistent=False)

    def halves(self, x: Tensor) -> Tensor:
        """0 or 1 per image, fixed for the image: which half it is in."""
        pixels = (x.flatten(1) * 255).round().long()
        hashed = (pixels * self.weights[: pixels.shape[1]].to(x.device)).sum(1)
        return (hashed >> 9) & 1

    def forward(self, x: Tensor) -> Tensor:
        flip = (self.halves(x) ^ (self.epoch % 2)).bool().view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(self.axis), x)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomHorizontalFlip(0.5)


class RandomVerticalFlip(RandomHorizontalFlip):
    axis = -2  # image height

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomVerticalFlip(self.p)


class RandomRotation(BatchOp):
    """Rotation by an angle drawn uniformly from ``[-degrees, degrees]``, bilinear, black fill."""

    def __init__(self, degrees: float = 10.0) -> None:
        super().__init__()
        self.degrees = non_negative(degrees, "rotation degrees")

    def forward(self, x: Tensor) -> Tensor:
        angle = (torch.rand(x.shape[0], device=x.device, dtype=x.dtype) * 2 - 1) * math.radians(self.degrees)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomRotation(self.degrees, interpolation=InterpolationMode.BILINEAR)


class RandomCrop(BatchOp):
    """Zero-pad by ``padding`` pixels, then crop back to the original size at a random offset (a translation)."""

    def __init__(self, padding: int = 2) -> None:
        super().__init__()
        self.padding = int(non_negative(padding, "crop padding"))

    def forward(self, x: Tensor) -> Tensor:
        b, _c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))
        rows = torch.randint(0, 2 * p + 1, (b, 1), device=x.device) + torch.arange(h, device=x.device)
        cols = torch.randint(0, 2 * p + 1, (b, 1), device=x.device) + torch.arange(w, device=x.device)
        batch = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing gathers every image's own window in one op: [B, H, W, C] -> [B, C, H, W].
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomCrop(size=IMAGE_HW, padding=self.padding, fill=0)


class RandomErasing(BatchOp):
    """Random erasing (Zhong et al.): with probability p, black out a rectangle of random area and aspect ratio.

    Samples rectangles exactly as torchvision does, including its up-to-10 tries
    for one that fits, but for every image at once.
    """

    def __init__(
        self,
        p: float = 0.5,
        scale: Sequence[float] = (0.02, 0.33),
        ratio: Sequence[float] = (0.3, 3.3),
        value: float = 0.0,
    ) -> None:
        super().__init__()
        self.p, self.scale, self.ratio, self.value = p, tuple(scale), tuple(ratio), value

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        dev, tries = x.device, 10
        area = h * w * torch.empty(b, tries, device=dev).uniform_(*self.scale)
        log_ratio = torch.empty(b, tries, device=dev).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))
        eh = torch.sqrt(area * log_ratio.exp()).round().long()
        ew = torch.sqrt(area / log_ratio.exp()).round().long()
        fits = (eh < h) & (ew < w)
        first = fits.int().argmax(1, keepdim=True)
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        erase = fits.any(1) & (torch.rand(b, device=dev) < self.p)
        top = (torch.rand(b, device=dev) * (h - eh + 1)).long()
        left = (torch.rand(b, device=dev) * (w - ew + 1)).long()
        r = torch.arange(h, device=dev)[None, :, None]
        c = torch.arange(w, device=dev)[None, None, :]
        in_rows = (r >= top[:, None, None]) & (r < (top + eh)[:, None, None])
        box = in_rows & (c >= left[:, None, None]) & (c < (left + ew)[:, None, None])
        return x.masked_fill((box & erase[:, None, None])[:, None], self.value)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomErasing(p=self.p, scale=self.scale, ratio=self.ratio, value=self.value)


class GaussianNoise(BatchOp):
    """With probability p, add N(0, sigma^2) noise to every pixel (in [0, 1] units), clipped to [0, 1]."""

    def __init__(self, sigma: float = 0.05, p: float = 0.5) -> None:
        super().__init__()
        self.sigma, self.p = sigma, p

    def forward(self, x: Tensor) -> Tensor:
        apply = (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p).to(x.dtype)
        return (x + apply * self.sigma * torch.randn_like(x)).clamp_(0, 1)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        # torchvision's GaussianNoise takes float images; the per-sample path carries uint8.
        noise = v2.Compose(
            [
                v2.ToDtype(torch.float32, scale=True),
                v2.GaussianNoise(sigma=self.sigma, clip=True),
                v2.ToDtype(torch.uint8, scale=True),
            ]
        )
        return v2.RandomApply([noise], p=self.p)


class GaussianBlur(BatchOp):
    """With probability p, blur with a Gaussian kernel whose sigma is drawn per image from ``sigma``."""

    def __init__(self, kernel_size: int = 3, sigma: Sequence[float] = (0.1, 1.0), p: float = 0.5) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ConfigError(f"blur kernel_size must be odd, got {kernel_size}")
        self.kernel_size, self.sigma, self.p = kernel_size, tuple(sigma), p

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        sigma = torch.empty(b, 1, device=x.device, dtype=x.dtype).uniform_(*self.sigma)
        t = torch.linspace(-(k // 2), k // 2, k, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [B*C, k]
        # One grouped, separable convolution blurs every image with its own kernel.
        y = F.pad(x.reshape(1, b * c, h, w), (k // 2,) * 4, mode="reflect")
        y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)
        y = F.conv2d(y, kernel[:, None, None, :], groups=b * c).reshape(b, c, h, w)
        y = y.clamp_(0, 1)  # a convex blend, but float rounding can step just past 1
        apply = torch.rand(b, 1, 1, 1, device=x.device) < self.p
        return torch.where(apply, y, x)

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return v2.RandomApply([v2.GaussianBlur(self.kernel_size, sigma=self.sigma)], p=self.p)


class Augmentation:
    """An ordered list of ops; builds the transforms for either data pipeline."""

    def __init__(self, ops: Sequence[Callable[[Tensor], Tensor]] = ()) -> None:
        self.ops = list(ops)
        for op in self.ops:
            if not callable(op):
                raise ConfigError(f"augmentation op {op!r} is not a transform; give each op a _target_")

    def __repr__(self) -> str:
        return f"Augmentation({', '.join(type(op).__name__ for op in self.ops) or 'none'})"

    @property
    def flips_horizontally(self) -> bool:
        """Whether training sees mirror images: mirror-image TTA (module.tta) only helps models that did."""
        return any(isinstance(op, (RandomHorizontalFlip, v2.RandomHorizontalFlip)) for op in self.ops)

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
        return (v2.Compose(first) if first else None), (nn.Sequential(*rest) if rest else None)  # type: ignore[call-overload]  # every batched op is an nn.Module
