"""TinyVGG with a third block and a hidden fully connected layer."""

from __future__ import annotations

from torch import Tensor, nn

from fmnist_lightning.models.registry import register_model
from fmnist_lightning.models.tinyvgg import conv_block


@register_model("tinyvgg3")
class TinyVGG3(nn.Module):
    """Three blocks of conv-relu-conv-relu-maxpool (28 -> 14 -> 7 -> 3), flatten, linear-relu, linear.

    ``fc_units`` defaults to 64: the flattened map is only ``hidden_units * 9`` = 90 features, so a
    64-unit layer keeps the head about as large as the conv trunk (~5.8k vs ~4.7k parameters) instead
    of dominating it, while staying several times wider than the 10 classes it has to separate.
    """

    def __init__(
        self,
        hidden_units: int = 10,
        fc_units: int = 64,
        batch_norm: bool = True,
        dropout: float = 0.0,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(in_channels, hidden_units, batch_norm=batch_norm),
            conv_block(hidden_units, hidden_units, batch_norm=batch_norm),
            conv_block(hidden_units, hidden_units, batch_norm=batch_norm),
        )
        # 7 -> 3 in the last pool drops the odd row/column, hence 3x3 rather than 3.5x3.5.
        head: list[nn.Module] = [
            nn.Flatten(),
            nn.Linear(hidden_units * 3 * 3, fc_units),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(fc_units, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
