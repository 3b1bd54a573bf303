"""Fashion-MNIST as uint8 tensors in memory, served whole batches at a time.

Images stay uint8 ``[N, 1, 28, 28]`` until a batch reaches the training device;
``on_after_batch_transfer`` then scales, augments (training batches only) and
normalises the whole batch there, so a GPU does that work for free and the CPU
does it once per batch instead of once per image.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from fmnist_lightning.config.combinations import OFFLINE_AND_MIX
from fmnist_lightning.config.files import FILE_ONLY
from fmnist_lightning.data.fashion_mnist import NORMALIZATION, NUM_CLASSES
from fmnist_lightning.data.idx_files import (
    RAW_FILES,
    check_idx_file,
    ensure_downloaded,
    load_split,
    raw_folder,
    resolve_data_root,
)
from fmnist_lightning.data.loaders import EpochShuffle, InMemoryImages, ResumableLoader, keep_batch
from fmnist_lightning.data.splits import fold_indices, split_indices
from fmnist_lightning.data.transforms import AlternatingFlip
from fmnist_lightning.errors import ConfigError, FmnistError, typed_line

log = logging.getLogger(__name__)


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
        mix: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
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
        # MixUp/CutMix (the mix group): (images, labels) -> (mixed images, soft labels), training batches only.
        self.mix = mix
        self.drop_last = drop_last
        self.num_workers = (0 if pipeline == "batched" else 1) if num_workers == "auto" else int(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.on_device = on_device
        self.sample_transform, self.batch_transform = self._build_transforms(augmentation, pipeline)
        # The ops that need the epoch (found once, set before each training batch).
        self.epoch_ops = (
            [op for op in self.batch_transform.modules() if isinstance(op, AlternatingFlip)]
            if isinstance(self.batch_transform, torch.nn.Module)
            else []
        )
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
                train_idx, val_idx = fold_indices(labels, self.folds, int(self.fold or 0), self.split_seed)
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
            log.info("Data: %s (train %d, val %d)", self.root, len(self.train_set), len(val_idx), extra=FILE_ONLY)
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = InMemoryImages(*load_split(self.root, "test"))

    def split_sizes(self) -> dict[str, int]:
        """Images per split: train and val as set up for fitting, test from its file's header (not loaded)."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        test = (
            len(self.test_set)
            if self.test_set is not None
            else check_idx_file(raw_folder(self.root) / RAW_FILES["test"][0], "images")[0]
        )
        return {"train": len(self.train_set), "val": len(self.val_set) if self.val_set is not None else 0, "test": test}

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
        sampler: EpochShuffle | None = None
        loader_class: type[DataLoader] = DataLoader
        extra: dict[str, Any] = {}
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
        looking at a preset never changes what a seeded run trains on. With ``mix`` set, each draw is then
        mixed as a training batch is: the column's images are the batch, so each row blends with the row above
        (the first with the last), by one ``lam`` per column for MixUp.
        """
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        labels = self.train_set.labels
        index = [int(torch.nonzero(labels == c)[0]) for c in range(NUM_CLASSES) if (labels == c).any()][:n_images]
        originals = self.train_set.images[index]
        columns = [originals.float() / 255]
        # Data on a GPU draws from that GPU's generator: forked too, so a run's first batch draws as it would have.
        cuda = [originals.device.index or 0] if originals.is_cuda else []
        with torch.random.fork_rng(devices=cuda):
            for _ in range(n_draws):
                images = originals
                if self.sample_transform is not None:
                    images = torch.stack([self.sample_transform(img) for img in originals])
                x = images.float() / 255
                x = self.batch_transform(x) if self.batch_transform is not None else x
                if self.mix is not None:
                    x, _ = self.mix(x, labels[index])
                columns.append(x)
        tiles = torch.stack(columns, 1).flatten(0, 1)
        return make_grid(tiles, nrow=1 + n_draws, padding=2, pad_value=0.5)

    def try_transforms(self) -> None:
        """Draw the training transforms once on two images, so a value they cannot take (a RandAugment magnitude
        past its bins) stops the run now, as bad input in one line, and not as a failure at the first batch."""
        try:
            self.preview(n_images=2, n_draws=1)
        except FmnistError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"the training augmentation cannot transform an image ({typed_line(exc)}); check the aug.* "
                "(and mix.*) values: python -m fmnist_lightning.augment aug=<preset> draws the preset as it is"
            ) from exc

    def serve_train_targets(self, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """Serve ``compute(images)`` beside every training batch's labels, as its third element: ``images`` are the
        training split's, uint8 ``[N, 1, 28, 28]`` as stored (unaugmented), and the result has one row per image
        (``distill.offline``: a teacher's logits). Returns it."""
        if self.mix is not None:
            # Checked before the config runs too (config.checks); a datamodule built by hand lands here.
            raise ConfigError(OFFLINE_AND_MIX)
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        targets = compute(self.train_set.images)
        if targets.shape[0] != len(self.train_set):
            raise ValueError(f"{targets.shape[0]} targets for {len(self.train_set)} training images")
        self.train_set.targets = targets.to(self.train_set.images.device)
        return targets

    def on_after_batch_transfer(self, batch: tuple[Tensor, ...] | Tensor, dataloader_idx: int) -> Any:
        # Lightning also passes bare image tensors through here (the model summary's example input).
        images, labels, *targets = (batch, None) if isinstance(batch, Tensor) else batch
        x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
        if self.batch_transform is not None and self.trainer is not None and self.trainer.training:
            for op in self.epoch_ops:
                op.epoch = self.trainer.current_epoch
            x = self.batch_transform(x)
        if self.mix is not None and labels is not None and self.trainer is not None and self.trainer.training:
            # After the augmentation, on the images in [0, 1]: a blend commutes with the normalisation.
            x, labels = self.mix(x, labels)
        x = normalize(x, self.mean, self.std)
        return x if labels is None else (x, labels, *targets)
