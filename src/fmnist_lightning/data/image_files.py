"""Ordinary image files (PNG, JPEG, any size, colour or grey) made into Fashion-MNIST-like images, and results as CSV.

Needs only numpy and PIL, so classifying with an exported model (``predict model=<file.onnx>``)
imports neither torch nor Lightning.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmnist_lightning.config.files import write_text_atomic
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, IMAGE_SIZE
from fmnist_lightning.errors import ConfigError, DataError

# A border whose median grey level is above mid-grey is a light background: Fashion-MNIST
# garments are light on black, so such images are inverted.
LIGHT_BACKGROUND = 127
# How far (in grey levels) a pixel must be from the background level to count as part of the
# object when cropping to it; smaller differences are sensor noise or JPEG ringing.
CONTENT_MARGIN = 16


@dataclass
class Result:
    path: Path
    probs: np.ndarray | None = None
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
                raise ConfigError(f"no files in {path}; pass inputs=<a folder of PNG or JPEG images, or one image>")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise ConfigError(
                f"inputs: {path} does not exist; pass inputs=<an image or a folder of images> that exists"
            )
    if not files:
        raise ConfigError(
            "no inputs given: python -m fmnist_lightning.predict ckpt_path=<file> inputs=<image or folder>"
        )
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


def to_fashion_mnist(image: Image.Image) -> np.ndarray:
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
    return np.array(grey, dtype=np.uint8)[None]


def read_image(path: Path) -> np.ndarray:
    """The file as a Fashion-MNIST-like uint8 tensor; DataError naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return to_fashion_mnist(image)
    except UnidentifiedImageError as exc:
        raise DataError(
            f"{path}: not an image (no image format recognised); pass PNG, JPEG or another image file Pillow reads"
        ) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # PIL raises OSError for truncated files and SyntaxError for broken PNG chunks.
        raise DataError(f"{path}: cannot read image ({exc}); it may be cut short: save or download it again") from exc


def top_classes(probs: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, most probable first (ties: the lower class index first)."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")[:k]
    return [(CLASS_NAMES[int(i)], float(probs[i])) for i in order]


CSV_FIRST_COLUMNS = ["file", "error", "class_1", "prob_1"]


def is_predictions_csv(path: Path) -> bool:
    """Whether ``path`` is a CSV that ``write_csv`` wrote (its header), so that predicting again may replace it."""
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return header[: len(CSV_FIRST_COLUMNS)] == CSV_FIRST_COLUMNS


def write_csv(path: Path, results: list[Result], k: int) -> None:
    """One row per input file: its top-k classes and probabilities, or the error that stopped it."""
    header = ["file", "error"] + [f"{col}_{i}" for i in range(1, k + 1) for col in ("class", "prob")]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    for r in results:
        top = top_classes(r.probs, k) if r.probs is not None else []
        cells = [x for name, p in top for x in (name, f"{p:.6f}")]
        writer.writerow([str(r.path), r.error or ""] + cells + [""] * (len(header) - 2 - len(cells)))
    write_text_atomic(path, text.getvalue())
