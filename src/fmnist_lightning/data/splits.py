"""Stratified, seeded splits of the training images: the validation split and K folds."""

from __future__ import annotations

import torch
from torch import Tensor

from fmnist_lightning.data.fashion_mnist import NUM_CLASSES
from fmnist_lightning.errors import ConfigError


def class_fractions(labels: Tensor, seed: int) -> Tensor:
    """A seeded position in ``[0, 1)`` for every sample, spread evenly within each class.

    Taking samples in order of this value gives a stratified subset of any size:
    the basis of the validation split (and of stratified folds).
    """
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(labels.numel(), generator=generator)
    shuffled = labels[perm]
    counts = torch.bincount(shuffled, minlength=NUM_CLASSES)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(shuffled, stable=True)
    rank_in_class = torch.empty_like(order)
    rank_in_class[order] = torch.arange(order.numel()) - starts[shuffled[order]]
    frac = torch.empty(labels.numel(), dtype=torch.float64)
    frac[perm] = (rank_in_class.double() + 0.5) / counts[shuffled].double()
    return frac


def split_indices(labels: Tensor, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """Stratified, seeded (train, val) indices with exactly ``val_size`` validation samples."""
    frac = class_fractions(labels, seed)
    order = torch.argsort(frac, stable=True)
    val = order[:val_size].sort().values
    train = order[val_size:].sort().values
    return train, val


def fold_indices(labels: Tensor, folds: int, fold: int, seed: int) -> tuple[Tensor, Tensor]:
    """Stratified, seeded K-fold (train, val) indices: fold ``fold`` validates, the other folds train.

    Each class's images, in the seeded order of ``class_fractions``, are cut into ``folds``
    contiguous chunks, so the folds are disjoint, cover every image, and hold each class
    in sizes that differ by at most one image.
    """
    if folds < 2 or not 0 <= fold < folds:
        raise ConfigError(f"data.fold={fold} with data.folds={folds}: need folds >= 2 and 0 <= fold < folds")
    assignment = (class_fractions(labels, seed) * folds).long()
    in_fold = assignment == fold
    return torch.nonzero(~in_fold).flatten(), torch.nonzero(in_fold).flatten()
