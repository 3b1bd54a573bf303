"""Augmentation presets: per-image randomness in batches, and the per-sample torchvision path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.data.transforms import Augmentation, RandomHorizontalFlip, RandomRotation, RandomVerticalFlip
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
    aug = instantiate({"_target_": "fmnist_lightning.data.transforms.Augmentation", **_load(preset)})
    images = (_batch(16) * 255).to(torch.uint8)
    per_sample = aug.per_sample()
    a = torch.stack([per_sample(img) for img in images]) if per_sample else images
    first, batched = aug.batched()
    b = torch.stack([first(img) for img in images]) if first else images
    b = b.float() / 255
    b = batched(b) if batched is not None else b
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert b.shape == images.shape and b.min() >= 0 and b.max() <= 1


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


def test_crop_offsets_cover_the_whole_range() -> None:
    from fmnist_lightning.data.transforms import RandomCrop

    x = torch.zeros(4000, 1, 28, 28)
    x[:, :, 14, 14] = 1.0  # a single dot: where it lands gives the offset
    out = RandomCrop(padding=2)(x)
    pos = out.flatten(1).argmax(1)
    dy, dx = pos // 28 - 14, pos % 28 - 14
    assert set(dy.tolist()) == set(range(-2, 3)) and set(dx.tolist()) == set(range(-2, 3))
    counts = torch.bincount(dx + 2).float()
    assert counts.min() / counts.max() > 0.8  # uniform over the 5 offsets


def test_erasing_rate_and_box_sizes_match_torchvision() -> None:
    from torchvision.transforms import v2

    from fmnist_lightning.data.transforms import RandomErasing

    n = 3000
    x = torch.ones(n, 1, 28, 28)
    batched = RandomErasing(p=0.5)(x)
    per_sample = torch.stack([v2.RandomErasing(p=0.5, value=0)(img) for img in x[:1000]])
    rate_b = (batched.flatten(1).min(1).values == 0).float().mean()
    rate_s = (per_sample.flatten(1).min(1).values == 0).float().mean()
    assert abs(rate_b - 0.5) < 0.05 and abs(rate_s - 0.5) < 0.06
    area_b = (batched == 0).flatten(1).float().sum(1)
    area_s = (per_sample == 0).flatten(1).float().sum(1)
    mean_b, mean_s = area_b[area_b > 0].mean(), area_s[area_s > 0].mean()
    assert abs(mean_b - mean_s) / mean_s < 0.1  # same distribution of erased areas


def test_noise_and_blur_are_applied_per_image() -> None:
    from fmnist_lightning.data.transforms import GaussianBlur, GaussianNoise

    x = _batch(2000)
    noisy = GaussianNoise(sigma=0.1, p=0.5)(x)
    changed = (noisy - x).abs().flatten(1).amax(1) > 0
    assert 0.45 < changed.float().mean() < 0.55
    blurred = GaussianBlur(3, sigma=(0.1, 2.0), p=1.0)(x)
    spread = (blurred - x).abs().sum((1, 2, 3))
    assert spread.std() > 0 and blurred.min() >= 0 and blurred.max() <= 1  # a different sigma per image


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment", "autoaugment"])
def test_policies_draw_ops_independently_per_image(policy: str) -> None:
    aug = instantiate({"_target_": "fmnist_lightning.data.transforms.Augmentation", **_load(policy)})
    (op,) = aug.ops
    torch.manual_seed(0)
    draws = op.draw(256, 28, 28)
    assert len({tuple(d) for d in draws}) > 20  # not one choice for the whole batch
    names = {name for d in draws for name, _ in d}
    assert len(names) >= 8  # the policy's op space is explored
    x = _batch(64)
    out = op(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1


def test_batched_policy_matches_torchvision_op_frequencies() -> None:
    from collections import Counter

    from torchvision.transforms import v2

    from fmnist_lightning.data.policies import BatchedPolicy

    torch.manual_seed(0)
    op = BatchedPolicy(v2.RandAugment(num_ops=2, magnitude=9))
    counts = Counter(name for d in op.draw(4000, 28, 28) for name, _ in d)
    n_ops = len(v2.RandAugment._AUGMENTATION_SPACE)
    expected = 8000 / n_ops
    assert set(counts) == set(v2.RandAugment._AUGMENTATION_SPACE)
    assert all(abs(c - expected) / expected < 0.2 for c in counts.values())


def test_preview_cli_writes_png(data_root, tmp_path) -> None:
    from conftest import run_cli

    out = tmp_path / "grid.png"
    result = run_cli(
        "-m",
        "fmnist_lightning.augment",
        "aug=strong",
        f"data.root={data_root}",
        "data.val_size=100",
        "data.download=false",
        f"out={out}",
        "draws=3",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from PIL import Image

    image = Image.open(out)
    # 10 class rows of 4 columns (the original and 3 draws): 28-pixel tiles, 2 pixels apart, upscaled 3x.
    assert image.size == ((4 * 30 + 2) * 3, (10 * 30 + 2) * 3)
    assert image.info["Software"] == "fmnist-augment"  # the mark that lets a second preview replace it


def test_a_preview_replaces_its_own_png_and_keeps_anybody_elses(data_root, tmp_path) -> None:
    from conftest import run_cli

    def preview(out) -> object:
        return run_cli(
            "-m",
            "fmnist_lightning.augment",
            "aug=flip",
            f"data.root={data_root}",
            "data.val_size=100",
            "data.download=false",
            f"out={out}",
            "draws=1",
            f"paths.log_dir={tmp_path / 'logs'}",
        )

    mine = tmp_path / "grid.png"
    assert preview(mine).returncode == 0 and preview(mine).returncode == 0
    theirs = tmp_path / "photo.png"
    theirs.write_bytes(mine.read_bytes()[:8] + b"somebody else's picture")
    refused = preview(theirs)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"error: out={theirs} exists and is not a preview this command wrote; pass a new file name, or move that "
        "file away first"
    )
    assert theirs.read_bytes().endswith(b"somebody else's picture")


@pytest.mark.parametrize(
    ("option", "line"),
    [
        ("draws=0", "error: draws=0 is impossible: it must be a number of augmented draws >= 1, e.g. draws=7"),
        ("scale=abc", "error: scale='abc' is str, not an integer"),
        ("aug.ops.0.policy.magnitude=99", "error: the training augmentation cannot transform an image (IndexError"),
    ],
)
def test_a_preview_option_or_augmentation_value_it_cannot_take_is_one_line(
    data_root, tmp_path, option: str, line: str
) -> None:
    from conftest import run_cli

    out = tmp_path / "grid.png"
    result = run_cli(
        "-m",
        "fmnist_lightning.augment",
        "aug=randaugment",
        f"data.root={data_root}",
        "data.val_size=100",
        "data.download=false",
        f"out={out}",
        option,
    )
    assert result.returncode == 2 and result.stderr.strip().startswith(line), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not out.exists()


def test_a_training_augmentation_value_it_cannot_take_stops_the_run_before_training(make_cfg, tmp_path) -> None:
    from fmnist_lightning.errors import ConfigError
    from fmnist_lightning.train import train

    # RandAugment's magnitudes are bins 0-30: torchvision finds out at its first image, which was the first batch.
    cfg = make_cfg("aug=randaugment", "aug.ops.0.policy.magnitude=99", "trainer.max_epochs=1")
    with pytest.raises(ConfigError, match=r"^the training augmentation cannot transform an image \(IndexError"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_preview_sweep_writes_a_grid_per_preset_in_its_own_directory(data_root, tmp_path) -> None:
    from conftest import run_cli

    result = run_cli(
        "-m",
        "fmnist_lightning.augment",
        "--multirun",
        "aug=flip,strong",
        f"data.root={data_root}",
        "data.val_size=100",
        "data.download=false",
        f"paths.log_dir={tmp_path}",
        "draws=2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    grids = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert [(g.parts[:2], g.parts[-2:]) for g in grids] == [
        (("augment", "multirun"), ("0", "flip.png")),
        (("augment", "multirun"), ("1", "strong.png")),
    ]
    # out= names one file; in a sweep each job writes its own, numbered as the job is.
    from fmnist_lightning.augment import sweep_file

    assert sweep_file(Path("grids/a.png"), None) == Path("grids/a.png")
    assert sweep_file(Path("grids/a.png"), 1) == Path("grids/a_1.png")
    # No training sweep's summary: a preview has no metric to rank jobs by.
    assert "val/acc_best" not in result.stdout + result.stderr
    assert "Sweep summary" not in result.stdout


def test_per_sample_pipeline_augments_each_training_image_in_the_loader_and_trains(make_cfg) -> None:
    from fmnist_lightning.config.hydra_compat import ALLOWED
    from fmnist_lightning.train import train

    cfg = make_cfg("aug=randaugment", "data.pipeline=per_sample", "debug=fast_dev_run")
    datamodule = instantiate(cfg.data, **ALLOWED)
    datamodule.setup("fit")
    datamodule.setup("test")
    # Augmented in the loader, image by image (torchvision on uint8), and not a second time on the device.
    assert datamodule.batch_transform is None and datamodule.train_set.transform is not None
    assert datamodule.val_set.transform is None and datamodule.test_set.transform is None
    torch.manual_seed(0)
    train_images = datamodule.train_set.images
    images, labels = datamodule.train_set.__getitems__([0] * 16)  # one image, drawn 16 times in one batch
    assert images.dtype == torch.uint8 and images.shape == (16, 1, 28, 28) and (labels == labels[0]).all()
    assert len({bytes(image.numpy()) for image in images}) > 8  # each image its own draw of ops and magnitudes
    assert any(not torch.equal(image, train_images[0]) for image in images)
    val_images, _ = datamodule.val_set.__getitems__([0, 1])
    assert torch.equal(val_images, datamodule.val_set.images[:2])  # validation images as stored

    metrics = train(cfg)
    assert 0 <= metrics["test/acc"] <= 1
