"""The data module reads real IDX files, splits them reproducibly and fails clearly on bad data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import N_TEST, N_TRAIN, SHARED_DATA, cli_overrides, run_cli
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.fashion_mnist import NORMALIZATION
from fmnist_lightning.data.idx_files import load_split, resolve_data_root
from fmnist_lightning.data.splits import split_indices
from fmnist_lightning.errors import ConfigError, DataError


def make_dm(root: Path, **kwargs) -> FashionMNISTDataModule:
    kwargs.setdefault("val_size", 100)
    dm = FashionMNISTDataModule(root=str(root), download=False, **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_loads_uint8_tensors_through_torchvision(data_root: Path) -> None:
    images, labels = load_split(data_root, "train")
    assert images.dtype == torch.uint8 and images.shape == (N_TRAIN, 1, 28, 28)
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))


def test_split_sizes_are_disjoint_and_cover_train(data_root: Path) -> None:
    dm = make_dm(data_root, val_size=100)
    assert len(dm.train_set) == N_TRAIN - 100 and len(dm.val_set) == 100 and len(dm.test_set) == N_TEST
    _, labels = load_split(data_root, "train")
    train_idx, val_idx = split_indices(labels, 100, seed=3)
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(N_TRAIN))


def test_split_is_seeded_and_stratified(data_root: Path) -> None:
    _, labels = load_split(data_root, "train")
    a, b, c = (split_indices(labels, 100, seed)[1] for seed in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.bincount(labels[a], minlength=10).tolist() == [10] * 10


def test_val_size_fraction_and_zero(data_root: Path) -> None:
    assert len(make_dm(data_root, val_size=0.2).val_set) == 120
    dm = make_dm(data_root, val_size=0)
    assert dm.val_set is None and len(dm.train_set) == N_TRAIN and not dm.has_validation


def test_val_size_as_large_as_train_set_is_refused(data_root: Path) -> None:
    with pytest.raises(ConfigError, match="leaves no training images"):
        make_dm(data_root, val_size=N_TRAIN)


@pytest.mark.parametrize("normalize", sorted(NORMALIZATION))
def test_batches_are_normalised_on_transfer(data_root: Path, normalize: str) -> None:
    dm = make_dm(data_root, normalize=normalize, batch_size=50)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (50, 1, 28, 28) and labels.shape == (50,)
    x, _y = dm.on_after_batch_transfer((images, labels), 0)
    mean, std = NORMALIZATION[normalize]
    assert x.dtype == torch.float32
    assert torch.allclose(x, (images.float() / 255 - mean) / std)


def test_official_test_set_is_only_for_testing(data_root: Path) -> None:
    dm = FashionMNISTDataModule(root=str(data_root), download=False, val_size=100)
    dm.setup("fit")
    assert dm.test_set is None
    dm.setup("test")
    assert len(dm.test_set) == N_TEST


@pytest.mark.skipif(not (SHARED_DATA / "FashionMNIST" / "raw").is_dir(), reason="no offline copy beside the checkout")
def test_default_root_finds_shared_copy() -> None:
    assert resolve_data_root(None) == SHARED_DATA.resolve()
    images, labels = load_split(SHARED_DATA, "test")
    assert images.shape == (10_000, 1, 28, 28) and labels.shape == (10_000,)


def test_missing_data_error_names_files(tmp_path: Path) -> None:
    dm = FashionMNISTDataModule(root=str(tmp_path), download=False)
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "data.root" in message and "\n" not in message


def test_a_failed_download_is_one_line_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torchvision's download, for real, from a mirror on loopback that has no such files: its error names the
    # mirror and the reason on lines of their own, which must reach the user as one line.
    import functools
    import http.server
    import threading

    from torchvision.datasets import FashionMNIST

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]  # the server's access log is noise here
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    mirror = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setattr(FashionMNIST, "mirrors", [mirror])
    try:
        dm = FashionMNISTDataModule(root=str(tmp_path / "root"), download=True)
        with pytest.raises(DataError) as info:
            dm.prepare_data()
    finally:
        server.shutdown()
        server.server_close()
    message = str(info.value)
    assert "\n" not in message
    assert f"the download failed (Error downloading train-images-idx3-ubyte.gz:; Tried {mirror}" in message
    assert "404" in message and "Fix: set data.root=" in message
    assert not (tmp_path / "root").exists()  # the folders made for the files are gone with the failed download


def _copy(data_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(data_root, tmp_path / "copy")
    return tmp_path / "copy"


def test_truncated_file_is_reported(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    path = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="train-images-idx3-ubyte is truncated"):
        make_dm(root)


def test_wrong_magic_is_reported(data_root: Path, tmp_path: Path) -> None:
    root = _copy(data_root, tmp_path)
    path = root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.write_bytes(b"\x00\x00\x08\x03" + path.read_bytes()[4:])
    with pytest.raises(DataError, match="not an IDX labels file"):
        make_dm(root)


def test_cli_missing_data_is_one_clear_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(*cli_overrides(empty, tmp_path / "logs"), "debug=fast_dev_run")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train-images-idx3-ubyte" in errors[0] and "data.root" in errors[0]
    assert "Traceback" not in result.stderr


def test_in_memory_split_serves_batches_from_the_device_it_lives_on(data_root) -> None:
    from fmnist_lightning.data.loaders import InMemoryImages

    images, labels = load_split(data_root, "test")
    # "meta" stands in for an accelerator here: the tensors move, and batches are cut where they are.
    dataset = InMemoryImages(images, labels).to(torch.device("meta"))
    batch, targets = dataset.__getitems__([0, 5, 7])
    assert batch.device.type == targets.device.type == "meta" and batch.shape == (3, 1, 28, 28)


def test_a_cpu_trainer_keeps_the_data_in_host_memory(make_cfg) -> None:
    import lightning as L
    from hydra.utils import instantiate

    datamodule = instantiate(make_cfg("data.on_device=true").data)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, max_epochs=1)
    datamodule.trainer = trainer
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert datamodule.train_set.images.device.type == "cpu" and loader.pin_memory is False
