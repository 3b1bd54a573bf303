"""The best-accuracy-per-FLOP CNN we keep under 100,000 parameters for CPU training."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.layers import conv_bn_relu, gap_head
from fmnist_lightning.models.registry import register_model


@register_model("compact")
class CompactCNN(nn.Module):
    """Stem conv at 28x28, then per stage a 2x2 max pool and two conv3x3-BN-ReLU (28 -> 14 -> 7), GAP, linear.

    ``widths`` is the stem width followed by one width per stage. FLOPs scale with the image area,
    so the default spends almost nothing at 28x28 (one conv from a single channel), puts depth at
    14x14 and most parameters at 7x7, where each costs a quarter as much compute: [32, 40, 64] is
    87,242 parameters and ~16.5 MFLOPs per image. Global average pooling replaces a flatten-FC head,
    which alone would cost more parameters than the whole trunk.

    ``pool_first=True`` pools each stage's input before its BatchNorm and ReLU instead of after
    (conv, pool, BN, ReLU, as airbench orders them). On a CPU the memory-bound BN, ReLU and pooling
    passes over the 28x28 stem output cost more than every convolution together; pooling first
    runs that BN and ReLU on a quarter of the pixels. Same parameters, same shapes: in eval mode
    with positive BN scales both orders compute the same function.

    ``ceil_mode=True`` keeps the last row and column where a pool halves an odd size: a third stage's
    7x7 map pools to 4x4 instead of 3x3, which drops 13 of its 49 positions from every later layer.
    It changes nothing at 28 and 14; at 7 it costs 16/9 of the third stage's FLOPs (no parameters).

    ``stem_stride=2`` strides the stem convolution instead of max-pooling its output: the stem writes
    14x14 maps, not 28x28 ones, and the first stage has no pool. The stem's FLOPs are tiny either way,
    but on a CPU its 28x28 output is not: writing it, pooling it and zeroing its gradient are memory-bound
    passes, and a step of ``speedrun`` took 0.67-0.70x the time without them (AMD EPYC Zen 3). It trades
    the pool's small-shift invariance for that time (shifted test views give it back); same parameters.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 40, 64),
        dropout: float = 0.0,
        in_channels: int = 1,
        num_classes: int = 10,
        pool_first: bool = False,
        ceil_mode: bool = False,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not 1 <= len(widths) <= 5:
            raise ConfigError(f"compact needs a stem width plus at most four stage widths, got {widths}")
        if stem_stride not in (1, 2):
            raise ConfigError(f"model.stem_stride must be 1 or 2 (2: in place of the first pool), got {stem_stride}")
        if stem_stride == 2 and len(widths) < 2:
            raise ConfigError("model.stem_stride=2 replaces the first stage's pool: give compact at least one stage")
        layers = conv_bn_relu(in_channels, widths[0], stride=stem_stride)
        for stage, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            # A strided stem has already halved the maps the first stage's pool would halve.
            pool = [] if stage == 0 and stem_stride == 2 else [nn.MaxPool2d(2, ceil_mode=ceil_mode)]
            layers += [
                *pool,
                *conv_bn_relu(width_in, width_out),
                *conv_bn_relu(width_out, width_out),
            ]
        if pool_first:
            # Move each pool in front of the BN and ReLU before it; module order (and so the
            # state_dict's order of tensors) stays that of the default layout.
            for i in [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]:
                layers.insert(i - 2, layers.pop(i))
        self.features = nn.Sequential(*layers)
        self.classifier = gap_head(widths[-1], num_classes, dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
