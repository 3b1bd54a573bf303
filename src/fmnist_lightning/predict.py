"""``python -m fmnist_lightning.predict ckpt_path=<file> inputs=<file or folder>`` / ``fmnist-predict``.

Classifies ordinary images (PNG, JPEG, any size, colour or grey) with a trained
checkpoint. Each image is first made to look like a Fashion-MNIST image: grey,
a light garment on a black background, the object fitted into 28x28 keeping its
aspect ratio, then normalised exactly as the run's training data.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

# Imported before Hydra sets up logging, so that its job_logging config replaces the console
# handlers Lightning installs at import (otherwise every Lightning message prints twice).
from fmnist_lightning import evaluation, restore
from fmnist_lightning.config import CONF_DIR
from fmnist_lightning.data import CLASS_NAMES, IMAGE_SIZE, normalize
from fmnist_lightning.errors import ConfigError, DataError, FmnistError, exit_with_error, exit_with_failure

log = logging.getLogger("fmnist_lightning")

# A border whose median grey level is above mid-grey is a light background: Fashion-MNIST
# garments are light on black, so such images are inverted.
LIGHT_BACKGROUND = 127
# How far (in grey levels) a pixel must be from the background level to count as part of the
# object when cropping to it; smaller differences are sensor noise or JPEG ringing.
CONTENT_MARGIN = 16
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


@dataclass
class Result:
    path: Path
    probs: Tensor | None = None
    error: str | None = None


def _skipped(path: Path, folder: Path, exclude: Sequence[Path]) -> bool:
    resolved = path.resolve()
    hidden = any(part.startswith(".") for part in path.relative_to(folder).parts)
    return hidden or any(resolved == e or e in resolved.parents for e in exclude)


def input_files(inputs: str | Sequence[str], exclude: Sequence[Path] = ()) -> list[Path]:
    """Every file named, and every file under every folder named (sorted; hidden and ``exclude`` ones skipped).

    ``exclude`` keeps this command's own output (its log directory, its CSV) out of a folder
    it is asked to classify, e.g. ``inputs=.``.
    """
    names = [inputs] if isinstance(inputs, str) else list(inputs)
    exclude = [Path(e).resolve() for e in exclude]
    files: list[Path] = []
    for name in names:
        path = Path(str(name)).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not _skipped(p, path, exclude))
            if not found:
                raise ConfigError(f"no files in {path}")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise ConfigError(f"inputs: {path} does not exist")
    if not files:
        raise ConfigError("no inputs given: python -m fmnist_lightning.predict ckpt_path=<file> inputs=<image or folder>")
    return files


def _on_white(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, i.e. background (a cut-out garment on nothing)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image


def _grey(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        # 16/32-bit grey: PIL's conversion to 8 bits clips rather than scales.
        array = np.asarray(image, dtype=np.float64)
        scale = 255 / array.max() if array.max() > 255 else 1.0
        return Image.fromarray((array * scale).round().astype(np.uint8))
    return _on_white(image).convert("L")


def _border_level(grey: Image.Image) -> float:
    pixels = np.asarray(grey)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return float(np.median(border))


def _fit_object(grey: Image.Image, background: float) -> Image.Image:
    """Crop to the object, map the background level to black, fit into 28x28 keeping the aspect ratio, centred."""
    box = grey.point(lambda v: 255 if v > background + CONTENT_MARGIN else 0).getbbox()
    if box is not None:
        grey = grey.crop(box)
    if background > 0:
        grey = grey.point(lambda v: max(0, round((v - background) * 255 / (255 - background))))
    return ImageOps.pad(grey, (IMAGE_SIZE, IMAGE_SIZE), method=Image.Resampling.LANCZOS, color=0)


def to_fashion_mnist(image: Image.Image) -> Tensor:
    """uint8 ``[1, 28, 28]``: grey, light object on black, fitted into the frame like Fashion-MNIST's images.

    A 28x28 image is only converted to grey (and inverted if its background is light),
    so a saved Fashion-MNIST image comes back exactly.
    """
    grey = _grey(ImageOps.exif_transpose(image))
    background = _border_level(grey)
    if background > LIGHT_BACKGROUND:
        grey, background = ImageOps.invert(grey), 255 - background
    if grey.size != (IMAGE_SIZE, IMAGE_SIZE):
        grey = _fit_object(grey, background)
    return torch.from_numpy(np.array(grey, dtype=np.uint8))[None]


def read_image(path: Path) -> Tensor:
    """The file as a Fashion-MNIST-like uint8 tensor; DataError naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_fashion_mnist(image)
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not an image (no image format recognised)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # PIL raises OSError for truncated files and SyntaxError for broken PNG chunks.
        raise DataError(f"{path}: cannot read image ({exc})") from exc


def classify(module: L.LightningModule, images: Tensor, config: dict[str, Any], cfg: DictConfig) -> Tensor:
    """Probabilities ``[N, classes]`` for uint8 images, normalised as the run's training data was."""
    mean, std = restore.normalization(config)
    loader = DataLoader(TensorDataset(normalize(images, mean, std)), batch_size=int(cfg.batch_size))
    trainer = evaluation.prediction_trainer(
        accelerator=cfg.accelerator, precision=(config.get("trainer") or {}).get("precision")
    )
    return evaluation.predict_probs(trainer, module, loader)


def top_classes(probs: Tensor, k: int) -> list[tuple[str, float]]:
    values, indices = probs.topk(min(k, probs.numel()))
    return [(CLASS_NAMES[int(i)], float(v)) for v, i in zip(values, indices)]


def write_csv(path: Path, results: list[Result], k: int) -> None:
    """One row per input file: its top-k classes and probabilities, or the error that stopped it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["file", "error"] + [f"{col}_{i}" for i in range(1, k + 1) for col in ("class", "prob")]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in results:
            top = top_classes(r.probs, k) if r.probs is not None else []
            cells = [x for name, p in top for x in (name, f"{p:.6f}")]
            writer.writerow([str(r.path), r.error or ""] + cells + [""] * (len(header) - 2 - len(cells)))
    tmp.replace(path)


def predict(cfg: DictConfig) -> list[Result]:
    """Classify every input file; per-file failures are reported and kept in the results, never fatal."""
    for key in ("ckpt_path", "inputs"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise ConfigError(f"{key} is required: python -m fmnist_lightning.predict ckpt_path=<file> inputs=<image or folder>")
    if int(cfg.top_k) < 1 or int(cfg.batch_size) < 1:
        raise ConfigError(f"top_k and batch_size must be >= 1, got top_k={cfg.top_k}, batch_size={cfg.batch_size}")
    checkpoint = restore.load_checkpoint(cfg.ckpt_path)
    config = restore.run_config(checkpoint)
    module = restore.module_from_checkpoint(checkpoint)
    module.tta = bool(cfg.tta)
    inputs = cfg.inputs if isinstance(cfg.inputs, str) else OmegaConf.to_container(cfg.inputs)
    # Earlier predict runs' logs too, so classifying "." twice gives the same answer.
    own_output = [Path(cfg.paths.output_dir), Path(cfg.paths.log_dir) / "predict"] + ([Path(cfg.csv)] if cfg.csv else [])
    results = [Result(path) for path in input_files(inputs, exclude=own_output)]
    images = []
    for result in results:
        try:
            images.append(read_image(result.path))
        except DataError as exc:
            result.error = str(exc)
            print(f"error: {exc}", file=sys.stderr)
    readable = [r for r in results if r.error is None]
    if readable:
        for result, probs in zip(readable, classify(module, torch.stack(images), config, cfg)):
            result.probs = probs
            top = ", ".join(f"{name} {p:.3f}" for name, p in top_classes(probs, int(cfg.top_k)))
            print(f"{result.path}: {top}")
    if cfg.csv:
        write_csv(Path(cfg.csv), results, int(cfg.top_k))
        print(f"Wrote {cfg.csv}")
    return results


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    evaluation.quiet_lightning_info()
    try:
        results = predict(cfg)
    except FmnistError as exc:
        exit_with_error(exc, EXIT_USAGE)
    except Exception as exc:
        exit_with_failure(exc, Path(HydraConfig.get().runtime.output_dir))
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"{failed} of {len(results)} files could not be classified", file=sys.stderr)
        raise SystemExit(EXIT_SOME_FAILED)


if __name__ == "__main__":
    main()
