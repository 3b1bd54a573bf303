"""MixUp and CutMix (the ``mix`` group, torchvision's v2 transforms): what they do to a batch, and that each option
trains, validates and tests a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig

from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import ALLOWED, INIT_ARGS

OPTIONS = ("mixup", "cutmix", "mixup_cutmix")


def mix_of(option: str, *overrides: str) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(config_name="config", overrides=[f"mix={option}", *overrides])
    return instantiate(cfg.data.mix, **ALLOWED)


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(n, 1, 28, 28), torch.arange(n) % 10  # neighbours always differ in class


def test_no_mix_by_default() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        assert "mix" not in compose(config_name="config").data


@pytest.mark.parametrize("option", OPTIONS)
def test_mixed_labels_are_probabilities_of_the_two_blended_classes(option: str) -> None:
    x, y = batch()
    mixed, labels = mix_of(option)(x, y)
    assert mixed.shape == x.shape and labels.shape == (len(y), 10)
    assert torch.allclose(labels.sum(1), torch.ones(len(y)))
    own, previous = labels[torch.arange(len(y)), y], labels[torch.arange(len(y)), y.roll(1)]
    # Each image holds its own class and its neighbour's (the batch rolled by one), nothing else.
    assert torch.allclose(own + previous, torch.ones(len(y)))


def test_mixup_blends_each_image_with_its_neighbour_by_its_label_weights() -> None:
    x, y = batch()
    mixed, labels = mix_of("mixup")(x, y)
    lam = labels[torch.arange(len(y)), y]  # one draw for the batch
    assert torch.allclose(lam, lam[0].expand_as(lam))
    expected = lam[0] * x + (1 - lam[0]) * x.roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-6)


def test_cutmix_pastes_a_box_of_the_neighbour_whose_area_is_its_label_weight() -> None:
    x, y = batch()
    mixed, labels = mix_of("cutmix")(x, y)
    pasted = (mixed != x) & (mixed == x.roll(1, 0))  # pixels taken from the neighbour (random: never equal)
    kept = mixed == x
    assert bool((pasted | kept).all())
    area = pasted.float().mean(dim=(1, 2, 3))
    assert torch.allclose(area, labels[torch.arange(len(y)), y.roll(1)], atol=1e-6)
    rows, cols = pasted[0, 0].any(1).nonzero(), pasted[0, 0].any(0).nonzero()
    if len(rows):  # one rectangle, the same for every image of the batch
        box = pasted[0, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all()) and bool((pasted == pasted[:1]).all())


class SeenLabels(Callback):
    """The labels of every batch the training, validation and test steps receive (after the batch transfer)."""

    seen: ClassVar[dict[str, list[torch.Tensor]]] = {}

    def _keep(self, stage: str, batch: Any) -> None:
        SeenLabels.seen.setdefault(stage, []).append(batch[1].detach().clone())

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        self._keep("train", batch)

    def on_validation_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int, idx: int = 0) -> None:
        self._keep("val", batch)

    def on_test_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int, idx: int = 0) -> None:
        self._keep("test", batch)


@pytest.mark.parametrize("option", OPTIONS)
def test_each_mix_option_trains_validates_and_tests(option: str, make_cfg: Callable[..., DictConfig]) -> None:
    from fmnist_lightning.train import train

    SeenLabels.seen.clear()
    metrics = train(
        make_cfg(
            f"mix={option}", "aug=flip", "debug=fast_dev_run", "+callbacks.seen_labels._target_=test_mix.SeenLabels"
        )
    )
    assert 0 <= metrics["test/acc"] <= 1 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    # The training batch was mixed: soft labels, each row a distribution, not every row one class.
    (train_labels,) = SeenLabels.seen["train"]
    assert train_labels.dim() == 2 and torch.allclose(train_labels.sum(1), torch.ones(len(train_labels)))
    assert bool((train_labels.max(1).values < 1).any())
    # Validation and test batches keep their class labels: their accuracy would fail on mixed ones.
    for stage in ("val", "test"):
        assert all(labels.dim() == 1 for labels in SeenLabels.seen[stage]), stage


@pytest.mark.parametrize("option", OPTIONS)
def test_the_mix_takes_the_runs_number_of_classes(option: str) -> None:
    # One number for the whole run, module.num_classes (which training checks against the dataset's ten).
    mix = mix_of(option, "module.num_classes=7")
    transforms = getattr(mix, "transforms", [mix])
    assert [t.num_classes for t in transforms] == [7] * len(transforms)


def test_a_mix_option_joins_a_preset() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(config_name="config", overrides=["experiment=best_small", "mix=cutmix"])
    assert cfg.data.mix._target_ == "torchvision.transforms.v2.CutMix" and cfg.data.batch_size == 256


def test_the_augmentation_preview_shows_each_column_mixed_as_a_batch(make_cfg: Callable[..., DictConfig]) -> None:
    draws = 3
    datamodule = instantiate(make_cfg("aug=none", "mix=mixup", "data.mix.alpha=1.0").data, **ALLOWED)
    grid = datamodule.preview(n_draws=draws)[0]  # make_grid repeats the one channel three times

    # make_grid's layout: 2-pixel padding around 28x28 tiles, a row per class, the original first.
    def tile(row: int, col: int) -> torch.Tensor:
        return grid[2 + 30 * row : 30 * (row + 1), 2 + 30 * col : 30 * (col + 1)]

    originals = torch.stack([tile(r, 0) for r in range(10)])
    for col in range(1, 1 + draws):
        drawn = torch.stack([tile(r, col) for r in range(10)])
        # MixUp: one lam for the column, each row blended with the row above (the batch rolled by one).
        neighbour = originals.roll(1, 0)
        lam = ((drawn - neighbour) * (originals - neighbour)).sum() / ((originals - neighbour) ** 2).sum()
        assert 0.0 < float(lam) < 1.0
        torch.testing.assert_close(drawn, lam * originals + (1 - lam) * neighbour, atol=1e-5, rtol=0)
