"""A small pre-activation ResNet for 28x28 grey images (ResNet-20-like by default)."""

from __future__ import annotations

from torch import Tensor, nn

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.layers import gap_head
from fmnist_lightning.models.registry import register_model


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv here feeds a BatchNorm (or the residual sum ahead of one), which has its own shift.
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus a shortcut (He et al., 2016, "Identity Mappings")."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = conv3x3(in_ch, out_ch, stride)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        # A projection sees the pre-activated input, as in the paper; an identity keeps the raw x
        # so the residual path stays a clean sum from block to block.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


@register_model("resnet")
class PreActResNet(nn.Module):
    """Stem conv, three stages of ``depth`` blocks (widths w, 2w, 4w; 28 -> 14 -> 7), BN-ReLU, GAP, linear."""

    def __init__(
        self,
        depth: int = 3,
        width: int = 16,
        dropout: float = 0.0,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ConfigError(f"resnet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.stem = conv3x3(in_channels, width)
        blocks: list[nn.Module] = []
        in_ch = width
        for stage, out_ch in enumerate((width, 2 * width, 4 * width)):
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(PreActBlock(in_ch, out_ch, stride))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        # Pre-activation blocks end on a conv, so the head normalises and activates once more.
        self.head = gap_head(in_ch, num_classes, dropout, prefix=[nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True)])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
