"""Fashion-MNIST as uint8 tensors in memory, served whole batches at a time.

Images stay uint8 ``[N, 1, 28, 28]`` until a batch reaches the training device;
``on_after_batch_transfer`` then scales, augments (training batches only) and
normalises the whole batch there, so a GPU does that work for free and the CPU
does it once per batch instead of once per image.
"""

from __future__ import annotations

import logging
import os
import itertools
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision.datasets import FashionMNIST
from torchvision.utils import make_grid

from fmnist_lightning.config import project_root
from fmnist_lightning.errors import ConfigError, DataError
from fmnist_lightning.fashion_mnist import CLASS_NAMES, IMAGE_SIZE, NORMALIZATION, NUM_CLASSES  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

RAW_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def resolve_data_root(root: str | os.PathLike | None) -> Path:
    """``root`` if given; else a ``shared/data`` beside the checkout (offline copy); else ``<checkout>/data``."""
    if root not in (None, ""):
        return Path(root).expanduser().resolve()
    for base in (Path.cwd(), project_root()):
        shared = base.resolve().parent / "shared" / "data"
        if (shared / FashionMNIST.__name__ / "raw").is_dir():
            return shared.resolve()
    return project_root() / "data"


def raw_folder(root: Path) -> Path:
    return root / FashionMNIST.__name__ / "raw"


def _missing_data_message(root: Path, missing: list[str], reason: str) -> str:
    return (
        f"Fashion-MNIST data not found: {reason}. Expected {', '.join(RAW_FILES['train'] + RAW_FILES['test'])} "
        f"in {raw_folder(root)} (missing: {', '.join(missing)}). Fix: set data.root=<folder that contains "
        "FashionMNIST/raw/>, or run online with data.download=true so torchvision downloads the official files."
    )


def check_idx_file(path: Path, kind: str) -> tuple[int, ...]:
    """Validate an IDX file's header and length without loading it; return its dimensions.

    torchvision's reader fails on bad files with bare asserts or reshape errors;
    checking first turns each fault into a message that names the file.
    """
    fix = "delete it so it is downloaded again, or point data.root at a good copy"
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DataError(f"{path} is truncated ({size} bytes, no IDX header); {fix}")
            (magic,) = struct.unpack(">i", head)
            expected = _IMAGES_MAGIC if kind == "images" else _LABELS_MAGIC
            if magic != expected:
                raise DataError(
                    f"{path} is not an IDX {kind} file (magic number {magic}, expected {expected}); {fix}"
                )
            ndim = magic % 256
            dims_bytes = fh.read(4 * ndim)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}; {fix}") from exc
    if len(dims_bytes) < 4 * ndim:
        raise DataError(f"{path} is truncated inside its header ({size} bytes); {fix}")
    dims = struct.unpack(f">{ndim}i", dims_bytes)
    expected_size = 4 + 4 * ndim + int(torch.tensor(dims).prod())
    if size != expected_size:
        state = "truncated" if size < expected_size else "longer than its header says"
        raise DataError(f"{path} is {state} ({size} bytes, header says {expected_size}); {fix}")
    if kind == "images" and tuple(dims[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(
            f"{path} holds {dims[1]}x{dims[2]} images; Fashion-MNIST images are "
            f"{IMAGE_SIZE}x{IMAGE_SIZE}. Point data.root at the Fashion-MNIST files"
        )
    return dims


def load_split(root: Path, split: str) -> tuple[Tensor, Tensor]:
    """Read one split through torchvision after validating its files: uint8 ``[N,1,28,28]``, int64 ``[N]``."""
    raw = raw_folder(root)
    images_file, labels_file = (raw / name for name in RAW_FILES[split])
    missing = [p.name for p in (images_file, labels_file) if not p.is_file()]
    if missing:
        raise DataError(_missing_data_message(root, missing, "files are missing"))
    n_images = check_idx_file(images_file, "images")[0]
    n_labels = check_idx_file(labels_file, "labels")[0]
    if n_images != n_labels:
        raise DataError(
            f"{images_file.name} has {n_images} images but {labels_file.name} has {n_labels} labels in {raw}; "
            "the files come from different sets: replace both"
        )
    dataset = FashionMNIST(str(root), train=(split == "train"), download=False)
    labels = dataset.targets.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{labels_file} has labels outside 0-{NUM_CLASSES - 1} (found {int(labels.min())}..{int(labels.max())}); "
            "replace it with the Fashion-MNIST labels file"
        )
    return dataset.data.unsqueeze(1).contiguous(), labels


def ensure_downloaded(root: Path, download: bool) -> None:
    """Make sure the raw files exist, downloading them through torchvision when allowed."""
    expected = RAW_FILES["train"] + RAW_FILES["test"]
    missing = [name for name in expected if not (raw_folder(root) / name).is_file()]
    if not missing:
        return
    if not download:
        raise DataError(_missing_data_message(root, missing, "files are missing and data.download=false"))
    log.info("Downloading Fashion-MNIST into %s", root)
    try:
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError depending on where it fails
        raise DataError(_missing_data_message(root, missing, f"the download failed ({exc})")) from exc


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


class InMemoryImages(Dataset):
    """uint8 images and labels in memory; ``__getitems__`` serves a whole batch with one index op.

    ``transform`` (optional) is a per-image torchvision transform on uint8 ``[1,H,W]``
    tensors, for augmentations that have no batched implementation.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable[[Tensor], Tensor] | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device: torch.device) -> InMemoryImages:
        """Keep the tensors on ``device``: batches are then cut there, with no copy per step."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        images = self.images[index]
        if self.transform is not None:
            images = torch.stack([self.transform(img) for img in images])
        return images, self.labels[index]


class EpochShuffle(RandomSampler):
    """A random order that is a function of (seed, epoch) alone, which can start part-way through an epoch.

    A plain shuffling DataLoader draws its order from the global random state, so a
    run resumed from a checkpoint would see other batches than the run it continues.
    Lightning calls ``set_epoch`` before every epoch; the starting epoch is passed in
    because a resumed fit fetches its first batch before that call. Being a
    ``RandomSampler``, it is replaced by a shuffling ``DistributedSampler`` under DDP.
    """

    def __init__(self, data_source: Dataset, seed: int, epoch: int = 0) -> None:
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
        return len(self.iterator)  # type: ignore[arg-type]


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
        self.served, self.served_epoch = 0, None

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def __iter__(self) -> Iterator[Any]:
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
            self.sampler.start_at(int(state["epoch"]), int(state["batches"]) * self.batch_size)
        else:
            # e.g. DDP's DistributedSampler: its epoch restarts from the top, as with any plain loader.
            log.warning("Resuming mid-epoch with a %s sampler: epoch %d starts over", type(self.sampler).__name__,
                        state["epoch"])


def keep_batch(batch: Any) -> Any:
    """Collate for ``__getitems__`` datasets: the batch is already stacked."""
    return batch


def normalize(images: Tensor, mean: float, std: float) -> Tensor:
    """uint8 (or already [0,1] float) images -> normalised float32."""
    x = images.float().div(255) if images.dtype == torch.uint8 else images.float()
    return (x - mean) / std


class FashionMNISTDataModule(L.LightningDataModule):
    """Official train images minus a stratified validation split; the official test set for testing only."""

    def __init__(
        self,
        root: str | None = None,
        download: bool = True,
        val_size: int | float = 5000,
        split_seed: int | None = 0,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        normalize: str = "dataset",
        pipeline: str = "batched",
        augmentation: Any = None,
        num_workers: int | str = "auto",
        pin_memory: bool | str = "auto",
        on_device: bool = True,
        drop_last: bool = False,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__()
        self._check_folds(folds, fold)
        if normalize not in NORMALIZATION:
            raise ConfigError(f"unknown data.normalize={normalize!r}; choose one of: {', '.join(NORMALIZATION)}")
        if pipeline not in ("batched", "per_sample"):
            raise ConfigError(f"unknown data.pipeline={pipeline!r}; choose batched or per_sample")
        if batch_size < 1 or eval_batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1 (got {batch_size}, eval {eval_batch_size})")
        if val_size < 0 or (isinstance(val_size, float) and val_size >= 1):
            raise ConfigError(f"data.val_size={val_size} must be a count >= 0 or a fraction in [0, 1)")
        self.root = resolve_data_root(root)
        self.download = download
        self.val_size = val_size
        self.folds, self.fold = folds, fold
        self.split_seed = 0 if split_seed is None else int(split_seed)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.mean, self.std = NORMALIZATION[normalize]
        self.pipeline = pipeline
        self.augmentation = augmentation
        self.drop_last = drop_last
        self.num_workers = (0 if pipeline == "batched" else 1) if num_workers == "auto" else int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.on_device = on_device
        self.sample_transform, self.batch_transform = self._build_transforms(augmentation, pipeline)
        self.train_set: InMemoryImages | None = None
        self.val_set: InMemoryImages | None = None
        self.test_set: InMemoryImages | None = None

    @staticmethod
    def _check_folds(folds: int | None, fold: int | None) -> None:
        if folds is None and fold is None:
            return
        if folds is None or fold is None:
            raise ConfigError(
                f"cross-validation needs both data.folds and data.fold (got folds={folds}, fold={fold}), "
                "e.g. data.folds=5 data.fold=0"
            )
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"data.folds={folds!r} must be an integer >= 2, e.g. data.folds=5")
        if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
            raise ConfigError(f"data.fold={fold!r} must be an integer in 0..{folds - 1} for data.folds={folds}")

    @staticmethod
    def _build_transforms(augmentation: Any, pipeline: str) -> tuple[Callable | None, Callable | None]:
        if augmentation is None:
            return None, None
        if pipeline == "per_sample":
            return augmentation.per_sample(), None
        return augmentation.batched()

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def prepare_data(self) -> None:
        ensure_downloaded(self.root, self.download)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = load_split(self.root, "train")
            if self.folds is not None:
                train_idx, val_idx = fold_indices(labels, self.folds, self.fold, self.split_seed)
                log.info("Cross-validation: fold %d of %d validates (data.val_size is not used)", self.fold, self.folds)
            else:
                n_val = round(self.val_size * len(labels)) if isinstance(self.val_size, float) else int(self.val_size)
                if n_val >= len(labels):
                    raise ConfigError(
                        f"data.val_size={self.val_size} leaves no training images out of {len(labels)}; "
                        "use a smaller validation split"
                    )
                train_idx, val_idx = split_indices(labels, n_val, self.split_seed)
            self.train_set = InMemoryImages(images[train_idx], labels[train_idx], self.sample_transform)
            self.val_set = InMemoryImages(images[val_idx], labels[val_idx]) if len(val_idx) else None
            log.info("Data: %s (train %d, val %d)", self.root, len(self.train_set), len(val_idx))
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = InMemoryImages(*load_split(self.root, "test"))

    @property
    def has_validation(self) -> bool:
        if self.train_set is None:
            self.setup("fit")
        return self.val_set is not None

    def _loader(self, dataset: InMemoryImages | None, train: bool) -> DataLoader:
        if dataset is None:
            return []  # type: ignore[return-value]  # Lightning skips a stage whose loader is empty
        workers = self.num_workers if train else 0
        device = self._resident_device(train, workers)
        if device is not None:
            dataset.to(device)
        sampler, loader_class, extra = None, DataLoader, {}
        if train:
            loader_class = ResumableLoader
            # The process seed (seed_everything's, when the config sets one) keys the order.
            epoch = self.trainer.current_epoch if self.trainer is not None else 0
            sampler = EpochShuffle(dataset, seed=torch.initial_seed(), epoch=epoch)
            # Each new iterator draws its workers' base seed from this generator, not torch's global one,
            # whose state a resumed run restores to the exact point of the interrupt.
            extra["generator"] = torch.Generator().manual_seed(torch.initial_seed())
        return loader_class(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=sampler,
            drop_last=train and self.drop_last,
            collate_fn=keep_batch,
            num_workers=workers,
            # Pinning is for host tensors on their way to an accelerator; resident ones are there already.
            pin_memory=self.pin_memory and dataset.images.device.type == "cpu",
            persistent_workers=workers > 0,
            **extra,
        )

    def _resident_device(self, train: bool, workers: int) -> torch.device | None:
        """The accelerator to keep a split on (``data.on_device``), or None to keep it in host memory.

        The whole training set is 47 MB of uint8, so on a GPU it stays there and each step
        only indexes it. Not for the per-sample path: its torchvision transforms run in
        loader workers, on the host.
        """
        if not self.on_device or self.trainer is None or (train and (self.pipeline != "batched" or workers)):
            return None
        device = self.trainer.strategy.root_device
        return device if device.type != "cpu" else None

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def preview(self, n_images: int = 10, n_draws: int = 7) -> Tensor:
        """A grid image ``[3, H, W]`` in [0, 1]: per row, one training image of each class then augmented draws.

        Runs the same transforms as training (either pipeline) under a forked RNG, so
        looking at a preset never changes what a seeded run trains on.
        """
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        labels = self.train_set.labels
        index = [int(torch.nonzero(labels == c)[0]) for c in range(NUM_CLASSES) if (labels == c).any()][:n_images]
        originals = self.train_set.images[index]
        columns = [originals.float() / 255]
        with torch.random.fork_rng(devices=[]):
            for _ in range(n_draws):
                images = originals
                if self.sample_transform is not None:
                    images = torch.stack([self.sample_transform(img) for img in originals])
                x = images.float() / 255
                columns.append(self.batch_transform(x) if self.batch_transform is not None else x)
        tiles = torch.stack(columns, 1).flatten(0, 1)
        return make_grid(tiles, nrow=1 + n_draws, padding=2, pad_value=0.5)

    def on_after_batch_transfer(self, batch: tuple[Tensor, Tensor] | Tensor, dataloader_idx: int) -> Any:
        # Lightning also passes bare image tensors through here (the model summary's example input).
        images, labels = (batch, None) if isinstance(batch, Tensor) else batch
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        if self.batch_transform is not None and self.trainer is not None and self.trainer.training:
            x = self.batch_transform(x)
        x = normalize(x, self.mean, self.std)
        return x if labels is None else (x, labels)
