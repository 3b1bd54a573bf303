"""LeNet-5 adapted to 28x28 inputs with 3x3 kernels (60,074 parameters)."""

from __future__ import annotations

from torch import Tensor, nn

from fmnist_lightning.models.registry import register_model


@register_model("lenet")
class LeNet(nn.Module):
    """conv(6)-pool-conv(16)-pool (28 -> 26 -> 13 -> 11 -> 5), then FC 400 -> 120 -> 84 -> classes."""

    def __init__(self, dropout: float = 0.0, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        # Unpadded convs, as in the original LeNet: each 3x3 trims a pixel off every side.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        head: list[nn.Module] = [nn.Flatten()]
        for width_in, width_out in ((16 * 5 * 5, 120), (120, 84)):
            head += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
            if dropout > 0:
                head.append(nn.Dropout(dropout))
        head.append(nn.Linear(84, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
