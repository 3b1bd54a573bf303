"""Augmentation presets: per-image randomness in batches, and the per-sample torchvision path."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from fmnist_lightning.augment import Augmentation, RandomHorizontalFlip, RandomRotation, RandomVerticalFlip
from fmnist_lightning.config import CONF_DIR
from fmnist_lightning.errors import ConfigError

PRESETS = sorted(p.stem for p in (CONF_DIR / "aug").glob("*.yaml"))


def _batch(n: int = 256) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.zeros(n, 1, 28, 28)
    x[:, :, 4:24, 2:8] = 1.0  # a bar on the left: flips move it, rotations tilt it
    return x


def test_horizontal_flip_is_independent_per_image() -> None:
    x = _batch(2000)
    out = RandomHorizontalFlip(0.5)(x)
    flipped = out[:, 0, 10, 2:8].sum(1) == 0
    assert 0.45 < flipped.float().mean() < 0.55
    assert torch.equal(out[flipped], x[flipped].flip(-1))


def test_vertical_flip_flips_rows() -> None:
    x = torch.arange(28.0).view(1, 1, 28, 1).expand(8, 1, 28, 28)
    out = RandomVerticalFlip(1.0)(x)
    assert torch.equal(out, x.flip(-2))


def test_rotation_angles_vary_per_image_within_bounds() -> None:
    x = _batch(64)
    out = RandomRotation(10)(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    diffs = (out - x).abs().sum((1, 2, 3))
    assert diffs.std() > 0  # not one angle for the whole batch
    # 10 degrees never moves the bar's centre of mass by more than ~3 px
    cols = torch.arange(28.0)
    centre = (out.sum((1, 2)) * cols).sum(-1) / out.sum((1, 2, 3))
    assert (centre - 4.5).abs().max() < 3


@pytest.mark.parametrize("preset", PRESETS)
def test_both_pipelines_give_same_dtype_shape_and_range(preset: str) -> None:
    aug = instantiate({"_target_": "fmnist_lightning.augment.Augmentation", **_load(preset)})
    images = (_batch(16) * 255).to(torch.uint8)
    per_sample = aug.per_sample()
    a = torch.stack([per_sample(img) for img in images]) if per_sample else images
    first, batched = aug.batched()
    b = torch.stack([first(img) for img in images]) if first else images
    b = b.float() / 255
    b = batched(b) if batched is not None else b
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert b.shape == images.shape and 0 <= b.min() and b.max() <= 1


def _load(preset: str) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "aug" / f"{preset}.yaml"))
    cfg.pop("_target_")
    return cfg


def test_per_sample_only_op_after_batched_op_is_refused() -> None:
    from torchvision.transforms import v2

    aug = Augmentation([RandomHorizontalFlip(), v2.RandAugment()])
    with pytest.raises(ConfigError, match="RandAugment has no batched form"):
        aug.batched()
