"""Serving in-memory images a whole batch at a time, in an order that a resumed run can pick up mid-epoch."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler

log = logging.getLogger(__name__)


class InMemoryImages(Dataset):
    """uint8 images and labels in memory; ``__getitems__`` serves a whole batch with one index op.

    ``transform`` (optional) is a per-image torchvision transform on uint8 ``[1,H,W]``
    tensors, for augmentations that have no batched implementation. ``targets`` (optional, set
    later) is one more tensor per image, served as a batch's third element (a teacher's logits).
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None):
        self.images, self.labels, self.transform = images, labels, transform
        self.targets: Tensor | None = None

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device: torch.device) -> InMemoryImages:
        """Keep the tensors on ``device``: batches are then cut there, with no copy per step."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        if self.targets is not None:
            self.targets = self.targets.to(device)
        return self

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        return tuple(part[0] for part in self.__getitems__([index]))

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, ...]:
        index = torch.as_tensor(indices)
        images = self.images[index]
        if self.transform is not None:
            images = torch.stack([self.transform(img) for img in images])
        if self.targets is not None:
            return images, self.labels[index], self.targets[index]
        return images, self.labels[index]


class EpochShuffle(RandomSampler):
    """A random order that is a function of (seed, epoch) alone, which can start part-way through an epoch.

    A plain shuffling DataLoader draws its order from the global random state, so a
    run resumed from a checkpoint would see other batches than the run it continues.
    Lightning calls ``set_epoch`` before every epoch; the starting epoch is passed in
    because a resumed fit fetches its first batch before that call. Being a
    ``RandomSampler``, it is replaced by a shuffling ``DistributedSampler`` under DDP.
    """

    def __init__(self, data_source: InMemoryImages, seed: int, epoch: int = 0) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.resume_at: tuple[int, int] | None = None
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed + epoch)

    def start_at(self, epoch: int, index: int) -> None:
        """Make the next pass over ``epoch`` (only that one) skip its first ``index`` positions."""
        self.resume_at = (epoch, index)

    def __iter__(self) -> Iterator[int]:
        resume, self.resume_at = self.resume_at, None
        skip = resume[1] if resume is not None and resume[0] == self.epoch else 0
        # The whole epoch's permutation is drawn, then cut: the order is the uninterrupted epoch's.
        return itertools.islice(super().__iter__(), skip, None)


class _CountingIterator:
    """Counts the batches a loader's iterator hands out, on the loader."""

    def __init__(self, loader: ResumableLoader, iterator: Iterator[Any]) -> None:
        self.loader, self.iterator = loader, iterator

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        batch = next(self.iterator)
        self.loader.served += 1
        return batch

    def __len__(self) -> int:
        return len(self.iterator)  # type: ignore[arg-type]  # a DataLoader iterator, which has a length


class ResumableLoader(DataLoader):
    """A training DataLoader whose place within the epoch travels in checkpoints.

    Lightning saves the ``state_dict`` of a loader that has one and hands it back on
    resume (``_Stateful``), so a run interrupted mid-epoch (SIGTERM, Ctrl-C) continues
    with the batch it would have trained on next instead of starting that epoch over.
    The count is of batches handed out: Lightning does not prefetch from a loader with
    a length, so every batch handed out was trained on.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served: int = 0
        self.served_epoch: int | None = None

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]  # counts the batches of the loader's own iterator
        self.served, self.served_epoch = 0, self._epoch()
        return _CountingIterator(self, super().__iter__())

    def state_dict(self) -> dict[str, int]:
        # Between set_epoch and the new epoch's first batch, nothing of that epoch has been served yet.
        served = self.served if self.served_epoch == self._epoch() else 0
        return {"epoch": self._epoch(), "batches": served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if not state.get("batches"):
            return
        if isinstance(self.sampler, EpochShuffle):
            self.sampler.start_at(int(state["epoch"]), int(state["batches"]) * int(self.batch_size or 1))
        else:
            # e.g. DDP's DistributedSampler: its epoch restarts from the top, as with any plain loader.
            log.warning(
                "Resuming mid-epoch with a %s sampler: epoch %d starts over",
                type(self.sampler).__name__,
                state["epoch"],
            )


def keep_batch(batch: Any) -> Any:
    """Collate for ``__getitems__`` datasets: the batch is already stacked."""
    return batch
