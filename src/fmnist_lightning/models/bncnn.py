"""A wide VGG-style CNN with BatchNorm and a deep dropout-regularised head (1,238,538 parameters)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.registry import register_model

IMAGE_SIZE = 28


@register_model("bncnn")
class BNCNN(nn.Module):
    """Blocks of conv3x3-maxpool-BN-ReLU (28 -> 14 -> 7 -> 3), dropout, then an FC stack with dropout."""

    def __init__(
        self,
        widths: Sequence[int] = (24, 96, 192),
        fc: Sequence[int] = (512, 256, 128),
        conv_dropout: float = 0.25,
        fc_dropout: float = 0.5,
        batch_norm: bool = True,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        widths, fc = [int(w) for w in widths], [int(u) for u in fc]
        side = IMAGE_SIZE >> len(widths)
        if not widths or side < 1:
            raise ConfigError(f"bncnn needs 1 to 4 conv widths for 28x28 images, got {widths}")

        layers: list[nn.Module] = []
        for width_in, width_out in itertools.pairwise([in_channels, *widths]):
            # The conv keeps its bias even before BN: the reference model has it, and the
            # published parameter count (1,238,538) includes it.
            layers += [nn.Conv2d(width_in, width_out, 3, padding=1), nn.MaxPool2d(2)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(width_out))
            layers.append(nn.ReLU(inplace=True))
        if conv_dropout > 0:
            layers.append(nn.Dropout(conv_dropout))
        self.features = nn.Sequential(*layers)

        head: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in itertools.pairwise([widths[-1] * side * side, *fc]):
            head += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
            if fc_dropout > 0:
                head.append(nn.Dropout(fc_dropout))
        head.append(nn.Linear(fc[-1] if fc else widths[-1] * side * side, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
