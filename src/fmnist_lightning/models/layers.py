"""Building blocks shared by several backbones."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    """A 'same'-padded conv, BatchNorm, ReLU."""
    # bias=False: the BatchNorm right after supplies the shift, so a bias would be a wasted parameter.
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def gap_head(
    width: int, num_classes: int, dropout: float = 0.0, prefix: list[nn.Module] | None = None
) -> nn.Sequential:
    """Global average pooling, optional dropout, linear classifier (after any ``prefix`` layers)."""
    layers = [*(prefix or []), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
