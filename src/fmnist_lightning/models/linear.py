"""Fully connected baselines: the notebooks' "V0"/"V1" models."""

from __future__ import annotations

from torch import Tensor, nn

from fmnist_lightning.models.registry import register_model


@register_model("linear")
class Linear(nn.Module):
    """Flatten + one linear layer: multinomial logistic regression on raw pixels."""

    def __init__(self, in_features: int = 28 * 28, num_classes: int = 10) -> None:
        super().__init__()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x)


@register_model("mlp")
class MLP(nn.Module):
    """Flatten + hidden linear layers. The default 784 -> 10 -> 10 (no activation) is the notebooks' V0."""

    def __init__(
        self,
        hidden: tuple[int, ...] | list[int] = (10,),
        activation: bool = False,
        dropout: float = 0.0,
        in_features: int = 28 * 28,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if activation:
                layers.append(nn.ReLU(inplace=True))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x)
