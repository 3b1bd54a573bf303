"""What a served model says of itself (the demo's model card), and a few test-set images to try it on.

The exported path needs only numpy and PIL: the test images are read from the raw IDX files here
rather than through ``data.idx_files`` (which imports torch), so ``fmnist-demo model=<file.onnx>``
stays torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from fmnist_lightning.config.files import METRICS_FILE, project_root
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, IMAGE_SIZE
from fmnist_lightning.deploy.runtime import ExportedModel

if TYPE_CHECKING:
    from fmnist_lightning.training.checkpoint_files import RestoredRun

# The official test split's files under <data root>/FashionMNIST/raw/, and their IDX magic numbers.
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _source_rows(source: dict[str, Any]) -> list[tuple[str, str]]:
    """An exported file's ``source_run`` (commit, precision, start time) as card rows."""
    commit = source.get("commit")
    code = f"{commit[:12]}{' with uncommitted changes' if source.get('dirty') else ''}" if commit else "unknown"
    return [("code", code), ("precision", str(source.get("precision"))), ("started", str(source.get("started")))]


def exported_card(model: ExportedModel) -> dict[str, Any]:
    """The metadata an exported file carries: model, test accuracy, its checkpoint and run."""
    meta = model.metadata
    rows = [("file", str(model.path)), ("format", model.format), ("model", str(meta.get("model", "unknown")))]
    if model.format == "onnx":
        rows.append(("numbers stored", f"{_onnx_weights(model.path):,} (weights and constants, after export folding)"))
    if meta.get("test_accuracy") is not None:
        rows.append(("test accuracy", f"{meta['test_accuracy']:.4f} on {meta.get('test_images', '?')} test images"))
    rows.append(("source checkpoint", str(meta.get("source_checkpoint", "unknown"))))
    rows += _source_rows(meta.get("source_run") or {})
    return {"rows": rows, "tta": False, "config": {k: v for k, v in meta.items() if k != "class_names"}}


def _onnx_weights(path: Path) -> int:
    """How many numbers the graph stores (weights, BatchNorm statistics, the folded normalisation)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(int(np.prod(init.dims)) for init in graph.initializer)


def checkpoint_card(run: RestoredRun) -> dict[str, Any]:
    """The run's model and size, its test accuracy (from the run directory's metrics.json), config and provenance."""
    from fmnist_lightning.models.registry import count_parameters
    from fmnist_lightning.training.provenance import describe

    config = run.config
    model = (config.get("choices") or {}).get("model") or (config.get("model") or {}).get("name", "unknown")
    rows = [
        ("file", str(run.path)),
        ("format", "checkpoint"),
        ("model", str(model)),
        ("parameters", f"{count_parameters(run.module):,}"),
        ("mirror TTA", "on" if run.module.tta else "off"),
    ]
    metrics_file = run.path.resolve().parent.parent / METRICS_FILE
    if metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("test/acc") is not None:
            rows.append(("test accuracy", f"{metrics['test/acc']:.4f} ({metrics_file})"))
    if config.get("provenance"):
        rows += describe(config["provenance"])
    shown = {k: v for k, v in config.items() if k != "provenance"}
    return {"rows": rows, "tta": bool(run.module.tta), "config": shown}


def default_data_root() -> Path:
    """Where the project keeps Fashion-MNIST: a ``shared/data`` beside the checkout when there is one."""
    shared = project_root().parent / "shared" / "data"
    return shared if (shared / "FashionMNIST" / "raw").is_dir() else project_root() / "data"


def _idx(path: Path, magic: int, dims: int) -> np.ndarray | None:
    """The uint8 payload of an uncompressed IDX file, or None when it is missing or not one."""
    if not path.is_file():
        return None
    data = np.fromfile(path, dtype=np.uint8)
    header = data[: 4 * (1 + dims)].view(">i4") if len(data) >= 4 * (1 + dims) else np.zeros(0)
    if len(header) != 1 + dims or header[0] != magic or len(data) != 4 * (1 + dims) + int(np.prod(header[1:])):
        return None
    return data[4 * (1 + dims) :].reshape(*header[1:])


def write_examples(root: Path, count: int, out: Path) -> list[dict[str, Any]]:
    """The first test image of each class (up to ``count``) as PNGs in ``out``; none when the files are missing."""
    raw = root / "FashionMNIST" / "raw"
    images, labels = _idx(raw / TEST_IMAGES, IMAGES_MAGIC, 3), _idx(raw / TEST_LABELS, LABELS_MAGIC, 1)
    if images is None or labels is None or len(images) != len(labels) or images.shape[1:] != (IMAGE_SIZE,) * 2:
        return []
    out.mkdir(parents=True, exist_ok=True)
    examples: list[dict[str, Any]] = []
    for label in range(len(CLASS_NAMES)):
        found = np.flatnonzero(labels == label)
        if len(examples) >= count:
            break
        if not len(found):
            continue
        name = f"test-{int(found[0]):05d}.png"
        Image.fromarray(images[found[0]]).save(out / name)
        examples.append({"name": name, "label": CLASS_NAMES[label], "index": int(found[0])})
    return examples
