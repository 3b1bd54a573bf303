"""MobileNet-style CNN of depthwise-separable blocks."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.layers import conv_bn_relu, gap_head
from fmnist_lightning.models.registry import register_model


def dwsep_block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (spatial mixing, and downsampling when stride=2), then pointwise 1x1 (channel mixing)."""
    return nn.Sequential(
        *conv_bn_relu(in_ch, in_ch, 3, stride=stride, groups=in_ch),
        *conv_bn_relu(in_ch, out_ch, 1),
    )


def checked_stages(widths: Sequence[int], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    """The blocks' widths and strides as integers, refused with one line unless each width has a stride of 1 or 2."""
    widths, strides = [int(w) for w in widths], [int(s) for s in strides]
    if not widths or len(widths) != len(strides):
        raise ConfigError(f"dwsep needs one stride per width, got widths={widths} and strides={strides}")
    if any(s not in (1, 2) for s in strides):
        raise ConfigError(f"dwsep strides must be 1 or 2, got {strides}")
    return widths, strides


@register_model("dwsep")
class DepthwiseSeparableCNN(nn.Module):
    """Stem conv3x3 at 28x28, depthwise-separable blocks (stride 2 where asked), GAP, linear."""

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 128, 256, 256),
        strides: Sequence[int] = (1, 2, 1, 2, 1),
        stem_width: int = 32,
        dropout: float = 0.0,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        widths, strides = checked_stages(widths, strides)
        # A full conv for the stem: a depthwise conv on a single input channel could not mix anything.
        layers: list[nn.Module] = conv_bn_relu(in_channels, stem_width, 3)
        for (width_in, width_out), stride in zip(itertools.pairwise([stem_width, *widths]), strides, strict=True):
            layers.append(dwsep_block(width_in, width_out, stride))
        self.features = nn.Sequential(*layers)
        self.classifier = gap_head(widths[-1], num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
