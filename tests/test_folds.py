"""Stratified K-fold cross-validation: folds split the training images, and a fold sweep reports mean and std."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import SHARED_DATA, cli_overrides, run_cli
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.fashion_mnist import NUM_CLASSES
from fmnist_lightning.data.idx_files import load_split
from fmnist_lightning.data.splits import fold_indices
from fmnist_lightning.errors import ConfigError

TINY = [
    "model=linear",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.fixture(scope="module")
def train_labels() -> torch.Tensor:
    """The 60,000 official training labels when ../shared/data has them, else unbalanced synthetic ones."""
    if (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        return load_split(SHARED_DATA, "train")[1]
    generator = torch.Generator().manual_seed(0)
    counts = [6000 + 37 * c for c in range(NUM_CLASSES)]  # unequal classes make stratification visible
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(labels.numel(), generator=generator)]


@pytest.mark.parametrize("folds", [2, 5, 7])
def test_folds_are_disjoint_cover_the_training_set_and_are_stratified(train_labels: torch.Tensor, folds: int) -> None:
    n = train_labels.numel()
    class_counts = torch.bincount(train_labels, minlength=NUM_CLASSES)
    val_parts = []
    for fold in range(folds):
        train_idx, val_idx = fold_indices(train_labels, folds, fold, seed=42)
        # Each fold's train and validation sets partition the training images.
        assert torch.equal(torch.cat([train_idx, val_idx]).sort().values, torch.arange(n))
        # Each class is split as evenly as integers allow: within one image of its share.
        per_class = torch.bincount(train_labels[val_idx], minlength=NUM_CLASSES)
        assert ((per_class.double() - class_counts.double() / folds).abs() < 1).all(), per_class
        val_parts.append(val_idx)
    # The validation folds are disjoint and together cover every training image exactly once.
    assert torch.equal(torch.cat(val_parts).sort().values, torch.arange(n))


def test_folds_are_seeded(train_labels: torch.Tensor) -> None:
    first = fold_indices(train_labels, 5, 1, seed=42)[1]
    assert torch.equal(first, fold_indices(train_labels, 5, 1, seed=42)[1])
    assert not torch.equal(first, fold_indices(train_labels, 5, 1, seed=7)[1])


def test_datamodule_validates_on_its_fold_and_leaves_the_test_set_alone(data_root: Path) -> None:
    images, labels = load_split(data_root, "train")
    test_images, test_labels = load_split(data_root, "test")
    for fold in range(3):
        dm = FashionMNISTDataModule(
            root=str(data_root), download=False, folds=3, fold=fold, split_seed=42, val_size=100
        )
        dm.setup("fit")
        dm.setup("test")
        train_idx, val_idx = fold_indices(labels, 3, fold, seed=42)
        # The fold validates (val_size is not used) and every other training image trains.
        assert torch.equal(dm.val_set.images, images[val_idx]) and torch.equal(dm.val_set.labels, labels[val_idx])
        assert torch.equal(dm.train_set.images, images[train_idx])
        assert torch.equal(dm.test_set.labels, test_labels) and torch.equal(dm.test_set.images, test_images)


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [
        (5, None, "both data.folds and data.fold"),
        (None, 0, "both data.folds and data.fold"),
        (1, 0, "data.folds=1 must be an integer >= 2"),
        (5, 5, "data.fold=5 must be an integer in 0..4"),
        (5, -1, "data.fold=-1 must be an integer in 0..4"),
    ],
)
def test_impossible_folds_are_refused(data_root: Path, folds: int | None, fold: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        FashionMNISTDataModule(root=str(data_root), download=False, folds=folds, fold=fold)


def test_cli_refuses_a_fold_outside_the_folds_with_one_line(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(*cli_overrides(data_root, tmp_path / "outputs"), "data.folds=3", "data.fold=3")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "data.fold=3" in errors[0], result.stderr[-2000:]


def test_fold_sweep_summary_has_mean_and_std_across_folds(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    result = run_cli(
        "-m",
        "fmnist_lightning",
        "--multirun",
        *cli_overrides(data_root, log_dir),
        *TINY,
        "data.folds=3",
        "data.fold=0,1,2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (log_dir / "multirun").iterdir()
    per_fold = {
        OmegaConf.load(job / ".hydra" / "config.yaml").data.fold: json.loads((job / "metrics.json").read_text())
        for job in sweep.iterdir()
        if job.is_dir() and job.name.isdigit()
    }
    assert sorted(per_fold) == [0, 1, 2]
    (row,) = list(csv.DictReader((sweep / "summary_folds.csv").open()))
    assert row["folds"] == "3/3"
    for metric in ("val/acc_best", "test/acc"):
        values = [m[metric] for m in per_fold.values()]
        assert float(row[f"{metric} mean"]) == pytest.approx(statistics.fmean(values))
        assert float(row[f"{metric} std"]) == pytest.approx(statistics.stdev(values))
    markdown = (sweep / "summary.md").read_text()
    assert "## Across folds (`data.fold`)" in markdown and "val/acc_best mean" in markdown
