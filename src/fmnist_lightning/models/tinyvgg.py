"""TinyVGG from CNN Explainer, as in the reference notebooks."""

from __future__ import annotations

from torch import Tensor, nn

from fmnist_lightning.models.registry import register_model


def conv_block(in_ch: int, out_ch: int, convs: int = 2, batch_norm: bool = False) -> nn.Sequential:
    """``convs`` size-preserving 3x3 convs with ReLU, then a 2x2 max pool that halves the image."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(in_ch if i == 0 else out_ch, out_ch, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.ReLU(inplace=True))
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


@register_model("tinyvgg")
class TinyVGG(nn.Module):
    """Two blocks of conv-relu-conv-relu-maxpool (28 -> 14 -> 7), flatten, linear."""

    def __init__(self, hidden_units: int = 10, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, hidden_units),
            conv_block(hidden_units, hidden_units),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 7 * 7, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
