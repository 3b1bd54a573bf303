"""RandAugment, TrivialAugment and AutoAugment on whole batches, with independent draws for every image.

torchvision's policies draw one op sequence per call and apply it with scalar
magnitudes, so batching them by calling torchvision's op once per (op, magnitude)
group still costs one call per image in practice (RandAugment alone has 28
signed ops). Here the draws are sampled for the whole batch as tensors, with the
same distribution as the policy's ``forward``, and each op runs once per step on
all images that drew it, with per-image magnitudes: all geometric ops share one
``grid_sample``; colour ops are per-image blends. Ops with no magnitude
(AutoContrast, Equalize, Invert) call torchvision itself. The tests check every
op against torchvision applied image by image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fmnist_lightning.data.transforms import BatchOp
from fmnist_lightning.errors import ConfigError

IDENTITY = "Identity"
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
POLICIES = (v2.RandAugment, v2.TrivialAugmentWide, v2.AutoAugment)


def _column(values: Tensor) -> Tensor:
    return values.view(-1, 1, 1, 1)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    factor = _column(factor)
    return (x * factor + other * (1 - factor)).clamp_(0, 1)


def _grey(x: Tensor) -> Tensor:
    return x if x.shape[1] == 1 else TF.rgb_to_grayscale(x)


def _brightness(x: Tensor, m: Tensor) -> Tensor:
    return (x * _column(1 + m)).clamp_(0, 1)


def _color(x: Tensor, m: Tensor) -> Tensor:
    # torchvision leaves a one-channel image unchanged: saturation is not defined for grey.
    return x if x.shape[1] == 1 else _blend(x, _grey(x), 1 + m)


def _contrast(x: Tensor, m: Tensor) -> Tensor:
    return _blend(x, _grey(x).mean(dim=(-3, -2, -1), keepdim=True), 1 + m)


def _sharpness(x: Tensor, m: Tensor) -> Tensor:
    c = x.shape[1]
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    blurred = F.conv2d(x, kernel, groups=c)
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    # The border keeps its pixels, as in PIL's and torchvision's sharpness.
    inner.add_((blurred - inner) * _column(-m))
    return out.clamp_(0, 1)


def _posterize(x: Tensor, m: Tensor) -> Tensor:
    levels = _column(2.0 ** m.floor())
    # x >= 0, so the floor is too; only the top value (1.0) needs clamping into the last level.
    return torch.minimum((x * levels).floor_(), levels - 1) / levels


def _solarize(x: Tensor, m: Tensor) -> Tensor:
    return torch.where(x >= _column(m), 1 - x, x)


COLOUR_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Brightness": _brightness,
    "Color": _color,
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: TF.autocontrast(x),
    "Equalize": lambda x, m: TF.equalize(x),
    "Invert": lambda x, m: TF.invert(x),
}


def _inverse_affine(op: Tensor, m: Tensor, names: list[str], height: int, width: int) -> Tensor:
    """Per-image ``[N, 2, 3]`` inverse matrices, as torchvision's ``_get_inverse_affine_matrix`` builds them.

    Shears pivot on the top-left corner (torchvision's auto-augment passes
    ``center=[0, 0]``); rotations and translations on the image centre.
    """

    def is_(name: str) -> Tensor:
        return op == names.index(name)

    zero = torch.zeros_like(m)
    # F.rotate passes -angle to the same matrix builder (its own comment: an incoherence kept for compatibility).
    rot = torch.where(is_("Rotate"), -m, zero).deg2rad()
    sx = torch.where(is_("ShearX"), torch.atan(m), zero)
    sy = torch.where(is_("ShearY"), torch.atan(m), zero)
    # Translations are whole pixels: torchvision casts the magnitude with int().
    tx = torch.where(is_("TranslateX"), m.trunc(), zero)
    ty = torch.where(is_("TranslateY"), m.trunc(), zero)
    sheared = is_("ShearX") | is_("ShearY")
    cx = torch.where(sheared, zero - width * 0.5, zero)
    cy = torch.where(sheared, zero - height * 0.5, zero)

    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * torch.tan(sx) + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * torch.tan(sx)
    e = cx - d * (cx + tx) + b * (cy + ty)
    f = cy + c * (cx + tx) - a * (cy + ty)
    return torch.stack([torch.stack([d, -b, e], 1), torch.stack([-c, a, f], 1)], 1)


def _warp(x: Tensor, theta: Tensor, mode: str) -> Tensor:
    """Apply one inverse affine matrix per image, with torchvision's pixel-centre grid (``_affine_grid``)."""
    n, _, h, w = x.shape
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=x.device, dtype=x.dtype)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=x.device, dtype=x.dtype)
    base = torch.stack(
        [xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=x.dtype, device=x.device)], -1
    )
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=x.dtype, device=x.device)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(theta.transpose(1, 2) / scale)
    return F.grid_sample(x, grid.view(n, h, w, 2), mode=mode, padding_mode="zeros", align_corners=False)


class BatchedPolicy(BatchOp):
    """A torchvision auto-augment policy applied to a float batch in ``[0, 1]``, drawn per image."""

    def __init__(self, policy: v2.Transform) -> None:
        super().__init__()
        if not isinstance(policy, POLICIES):
            valid = ", ".join(f"torchvision.transforms.v2.{p.__name__}" for p in POLICIES)
            raise ConfigError(f"BatchedPolicy takes one of {valid}; got {type(policy).__name__}")
        self.policy = policy
        space = policy._AUGMENTATION_SPACE
        self.names = [IDENTITY] + [name for name in space if name != IDENTITY]
        self.signed = torch.tensor([name in space and space[name][1] for name in self.names])
        # Fixed per policy, so built once rather than on every training step.
        self.geometric = torch.tensor([name in GEOMETRIC for name in self.names])
        self.colour_ops = [(fn, self.names.index(name)) for name, fn in COLOUR_OPS.items() if name in self.names]
        self.space_to_name = torch.tensor([self.names.index(name) for name in space])
        if isinstance(policy, v2.AutoAugment):
            # Per sub-policy step: op index, probability and magnitude bin of every sub-policy.
            self.sub_policies = [
                (
                    torch.tensor([self.names.index(name) for name, _, _ in sub]),
                    torch.tensor([p for _, p, _ in sub]),
                    torch.tensor([b if b is not None else 0 for _, _, b in sub]),
                )
                for sub in zip(*policy._policies, strict=True)
            ]
        self._magnitude_tables: dict[tuple[int, int, int], Tensor] = {}

    def _magnitudes(self, bins: int, height: int, width: int) -> Tensor:
        """``[ops, bins]`` table of each op's magnitude per bin (0 for ops without one)."""
        key = (bins, height, width)
        if key in self._magnitude_tables:
            return self._magnitude_tables[key]
        space = self.policy._AUGMENTATION_SPACE
        table = torch.zeros(len(self.names), bins)
        for i, name in enumerate(self.names):
            values = space[name][0](bins, height, width) if name in space else None
            if values is not None and values.ndim > 0:
                table[i] = values.float()
        self._magnitude_tables[key] = table
        return table

    def _sign(self, op: Tensor) -> Tensor:
        flip = self.signed[op] & (torch.rand(op.shape) <= 0.5)
        return 1.0 - 2.0 * flip.float()

    def sample(self, n: int, height: int, width: int) -> tuple[Tensor, Tensor]:
        """``(op, magnitude)``, each ``[steps, n]``, drawn as the policy's own ``forward`` draws them per image."""
        policy = self.policy
        if isinstance(policy, v2.AutoAugment):
            table = self._magnitudes(10, height, width)
            chosen = torch.randint(len(policy._policies), (n,))
            ops, mags = [], []
            for op_of, prob, bin_of in self.sub_policies:
                op = torch.where(torch.rand(n) <= prob[chosen], op_of[chosen], 0)
                ops.append(op)
                mags.append(table[op, bin_of[chosen]] * self._sign(op))
            return torch.stack(ops), torch.stack(mags)
        bins = policy.num_magnitude_bins
        table = self._magnitudes(bins, height, width)
        steps = policy.num_ops if isinstance(policy, v2.RandAugment) else 1
        op = self.space_to_name[torch.randint(len(self.space_to_name), (steps, n))]
        if isinstance(policy, v2.RandAugment):
            bin_of = torch.full((steps, n), policy.magnitude)
        else:
            bin_of = torch.randint(bins, (steps, n))
        return op, table[op, bin_of] * self._sign(op)

    def draw(self, n: int, height: int, width: int) -> list[list[tuple[str, float]]]:
        """The (op, magnitude) sequence for each of ``n`` images, as Python values."""
        op, mag = self.sample(n, height, width)
        return [
            [(self.names[o], m) for o, m in zip(op[:, i].tolist(), mag[:, i].tolist(), strict=True)] for i in range(n)
        ]

    def apply_step(self, x: Tensor, op: Tensor, magnitude: Tensor) -> Tensor:
        """One step: image ``i`` gets op ``self.names[op[i]]`` with ``magnitude[i]``."""
        # Which images get which op is worked out on the host, where sample() draws it: on an
        # accelerator, a nonzero() per op on device tensors would wait for the device every time.
        op, magnitude = op.cpu(), magnitude.cpu()
        out = x.clone()
        moved = self.geometric[op].nonzero().squeeze(1)
        if len(moved):
            theta = _inverse_affine(op[moved], magnitude[moved], self.names, x.shape[-2], x.shape[-1])
            rows = moved.to(x.device)
            mode = v2.InterpolationMode(self.policy.interpolation).value
            out[rows] = _warp(out[rows], theta.to(x.device, x.dtype), mode)
        for fn, index in self.colour_ops:
            members = (op == index).nonzero().squeeze(1)
            if len(members):
                rows = members.to(x.device)
                out[rows] = fn(out[rows], magnitude[members].to(x.device, x.dtype))
        return out

    def forward(self, x: Tensor) -> Tensor:
        op, magnitude = self.sample(x.shape[0], x.shape[-2], x.shape[-1])
        for step_op, step_magnitude in zip(op, magnitude, strict=True):
            x = self.apply_step(x, step_op, step_magnitude)
        return x

    def per_sample(self) -> Callable[[Tensor], Tensor]:
        return self.policy
