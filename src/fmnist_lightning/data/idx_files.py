"""The Fashion-MNIST IDX files: where they are, checks that name the broken file, reading a split, downloading.

torchvision's ``FashionMNIST`` reads and downloads the files; the checks run first, because its
reader fails on bad files with bare asserts or reshape errors.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import torch
from torch import Tensor
from torchvision.datasets import FashionMNIST

from fmnist_lightning.config.files import project_root
from fmnist_lightning.data.fashion_mnist import IMAGE_SIZE, NUM_CLASSES
from fmnist_lightning.errors import DataError, on_one_line

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
                raise DataError(f"{path} is not an IDX {kind} file (magic number {magic}, expected {expected}); {fix}")
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
    # The folders torchvision makes for the files, from the first that is missing now.
    made = [folder for folder in (raw_folder(root), raw_folder(root).parent, root) if not folder.exists()]
    try:
        for train in (True, False):
            FashionMNIST(str(root), train=train, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError depending on where it fails
        for folder in made:  # innermost first; a folder that holds anything stays
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        # torchvision's message names each mirror it tried, a line apiece.
        reason = f"the download failed ({on_one_line(str(exc)) or type(exc).__name__})"
        raise DataError(_missing_data_message(root, missing, reason)) from exc
