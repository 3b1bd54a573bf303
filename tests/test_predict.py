"""``predict`` on image files written from test-set images: as saved, 4x larger, RGB, inverted on white."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image

from conftest import cli_overrides, run_cli
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.data.datamodule import normalize
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from fmnist_lightning.data.idx_files import load_split
from fmnist_lightning.data.image_files import read_image
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.predict import predict
from fmnist_lightning.training import checkpoint_files

SCALE = 4  # "4x larger"
TOP_K = 3


@pytest.fixture(scope="session")
def checkpoint_path(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = tmp_path_factory.mktemp("outputs")
    result = run_cli(
        *cli_overrides(data_root, log_dir),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=csv",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def test_images(data_root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test image of every class: uint8 [classes, 1, 28, 28] and their labels."""
    images, labels = load_split(data_root, "test")
    index = [int(torch.nonzero(labels == c)[0]) for c in range(NUM_CLASSES)]
    return images[index], labels[index]


def predict_cfg(*overrides: str) -> DictConfig:
    """The real ``predict`` config composed as the CLI composes it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
            cfg = compose(config_name="predict", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        # What Hydra sets at run time: this run's directory under the log directory.
        cfg.paths.output_dir = str(Path(cfg.paths.log_dir) / "predict" / "in-process")
    return cfg


def write_variants(images: torch.Tensor, folder: Path) -> dict[str, list[Path]]:
    """Each image saved four ways; returns the files of each way, in image order."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[Path]] = {"plain": [], "larger": [], "rgb": [], "inverted": []}
    for i, image in enumerate(images[:, 0].numpy()):
        grey = Image.fromarray(image)
        side = grey.width * SCALE
        variants = {
            "plain": grey,
            "larger": grey.resize((side, side), Image.Resampling.NEAREST),
            "rgb": grey.convert("RGB"),
            # A dark garment on a white background, as in a product photo.
            "inverted": Image.fromarray(255 - image).convert("RGB"),
        }
        for way, variant in variants.items():
            path = folder / f"{CLASS_NAMES[i].replace('/', '-')}_{way}.png"
            variant.save(path)
            files[way].append(path)
    return files


def _rows(csv_path: Path) -> dict[str, dict[str, str]]:
    with csv_path.open(newline="") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def test_predict_classifies_images_as_the_model_classifies_the_tensors(
    checkpoint_path: Path, test_images, tmp_path: Path
) -> None:
    images, _ = test_images
    inputs = tmp_path / "inputs"
    files = write_variants(images, inputs)
    notes = inputs / "notes.txt"
    notes.write_text("a shopping list, not a picture\n")
    # The command's own CSV and log directory inside the folder it classifies are not inputs.
    settings = [
        f"ckpt_path={checkpoint_path}",
        f"inputs={inputs}",
        f"csv={inputs / 'predictions.csv'}",
        f"paths.log_dir={inputs / 'outputs'}",
    ]
    result = run_cli("-m", "fmnist_lightning.predict", *settings)
    out = inputs / "predictions.csv"

    # One file failed: the exit code says so, the others were still classified.
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"error: {tmp_path / 'inputs' / 'notes.txt'}: not an image" in result.stderr
    # The known-harmless Lightning/torch warnings (e.g. the LeafSpec deprecation) are filtered; none is left.
    assert "Warning" not in result.stderr, result.stderr
    rows = _rows(out)
    expected_files = {str(p) for paths in files.values() for p in paths} | {str(notes)}
    assert set(rows) == expected_files
    assert rows[str(notes)]["error"]
    for paths in files.values():
        for path in paths:
            row = rows[str(path)]
            assert not row["error"] and all(row[f"class_{k}"] in CLASS_NAMES for k in range(1, TOP_K + 1))
            assert f"{path}: {row['class_1']} " in result.stdout

    # The model's own predictions on the dataset tensors.
    checkpoint = checkpoint_files.load_checkpoint(checkpoint_path)
    module = checkpoint_files.module_from_checkpoint(checkpoint)
    with torch.no_grad():
        probs = module(
            normalize(images, *checkpoint_files.normalization(checkpoint_files.run_config(checkpoint)))
        ).softmax(-1)
    top_probs, top_classes = probs.topk(TOP_K)
    # Saved as they are, in RGB, or inverted on white: all three come back as exactly the same tensor.
    for way in ("plain", "rgb", "inverted"):
        for i, path in enumerate(files[way]):
            row = rows[str(path)]
            assert [row[f"class_{k + 1}"] for k in range(TOP_K)] == [CLASS_NAMES[int(c)] for c in top_classes[i]]
            written = torch.tensor([float(row[f"prob_{k + 1}"]) for k in range(TOP_K)])
            # The CSV holds six decimals.
            torch.testing.assert_close(written, top_probs[i], atol=1e-6, rtol=0)

    # Run again (in-process): the first run's CSV and logs are still not taken for inputs.
    again = predict(predict_cfg(*settings))
    assert {str(r.path) for r in again} == expected_files


def test_larger_images_are_fitted_back_into_the_frame(test_images, tmp_path: Path) -> None:
    images, _ = test_images
    files = write_variants(images, tmp_path)
    originals = images.float()
    for way in ("plain", "rgb", "inverted"):
        assert torch.equal(torch.stack([torch.from_numpy(read_image(p)) for p in files[way]]), images)
    # A 4x larger image, shrunk back into 28x28, is closer to its own original than to any other image.
    for i, path in enumerate(files["larger"]):
        distance = (originals - torch.from_numpy(read_image(path)).float()).abs().mean(dim=(1, 2, 3))
        assert int(distance.argmin()) == i


def test_a_csv_that_is_a_folder_or_another_programs_file_is_refused_and_kept(tmp_path: Path) -> None:
    theirs = tmp_path / "keep.csv"
    theirs.write_text("name,amount\nrent,900\n")
    common = ["ckpt_path=unread.ckpt", f"inputs={tmp_path}", f"paths.log_dir={tmp_path / 'logs'}"]
    with pytest.raises(ConfigError, match=r"keep\.csv exists and is not a predictions file of this command"):
        predict(predict_cfg(*common, f"csv={theirs}"))
    assert theirs.read_text() == "name,amount\nrent,900\n"
    with pytest.raises(ConfigError, match=rf"^csv={tmp_path} is a folder; pass the file to write"):
        predict(predict_cfg(*common, f"csv={tmp_path}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]


def test_usage_errors_exit_2(checkpoint_path: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli(
        "-m",
        "fmnist_lightning.predict",
        f"ckpt_path={checkpoint_path}",
        f"inputs={missing}",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: inputs: {missing} does not exist; pass inputs=<an image or a folder of images> that exists"
    )
    result = run_cli(
        "-m",
        "fmnist_lightning.predict",
        f"ckpt_path={checkpoint_path}",
        f"inputs={tmp_path}",
        "top_k=three",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: top_k='three' is str, not an integer: it must be a number of classes >= 1, e.g. top_k=3"
    )

    fmnist_predict = Path(sys.executable).parent / "fmnist-predict"
    result = subprocess.run(
        [str(fmnist_predict), f"inputs={tmp_path}", f"paths.log_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: give exactly one of ckpt_path=")
