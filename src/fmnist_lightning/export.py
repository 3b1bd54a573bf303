"""``python -m fmnist_lightning.export ckpt_path=<file.ckpt> format=onnx|pt2|torchscript`` / ``fmnist-export``.

Writes the checkpoint's model as one file that serves without this project: the
run's normalisation folded in front of the backbone and a softmax behind it, so it
takes a float32 ``[N, 1, 28, 28]`` batch in [0, 1] (any N) and returns class
probabilities. Class names, the preprocessing, the source checkpoint and its test
accuracy travel inside the file. Before anything is declared done, the exported file
is run (onnxruntime / torch.export.load / the TorchScript loader) on the official test images and must
agree with the checkpoint on every top-1 class, with probabilities within ``atol``;
the result goes to ``export.json``. ``quantize=dynamic|static`` adds an int8 ONNX copy
(onnxruntime's quantization tools; static is calibrated on training images) with its
accuracy change and size.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.cli.commands import hydra_command
from fmnist_lightning.config.checks import check_values, positive, whole
from fmnist_lightning.config.files import CONF_DIR, write_json
from fmnist_lightning.config.output_dirs import staging_folder
from fmnist_lightning.deploy.quantization import QUANTIZE, quantize
from fmnist_lightning.deploy.runtime import FORMATS
from fmnist_lightning.errors import ConfigError

if TYPE_CHECKING:
    from fmnist_lightning.training.checkpoint_files import RestoredRun

log = logging.getLogger("fmnist_lightning")

EXPORT_FILE = "export.json"
OPTION_CHECKS = (
    whole("opset", 1, "an ONNX opset number", "opset=18"),
    positive("atol", "a tolerance on the probabilities > 0", "atol=1e-4"),
    positive("int8_atol", "a tolerance on the int8 copy's probabilities > 0", "int8_atol=0.05"),
    whole("batch_size", 1, "a batch size >= 1", "batch_size=1000"),
    whole("calibration_images", 1, "a number of training images >= 1", "calibration_images=1000"),
)


def check_options(cfg: DictConfig) -> None:
    """Refuse a missing checkpoint, an unknown format or quantization before anything is loaded."""
    if OmegaConf.is_missing(cfg, "ckpt_path") or not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required: python -m fmnist_lightning.export ckpt_path=<file.ckpt> format=onnx")
    if cfg.format not in FORMATS:
        raise ConfigError(f"unknown format={cfg.format!r}; choose one of: {', '.join(FORMATS)}")
    if cfg.quantize is not None and (cfg.quantize not in QUANTIZE or cfg.format != "onnx"):
        raise ConfigError(f"quantize={cfg.quantize!r}: choose one of {', '.join(QUANTIZE)}, with format=onnx")
    check_values(cfg, OPTION_CHECKS)


def check_out_dir(out_dir: Path, checkpoint: Path) -> None:
    """``out=`` is a folder, and holds no export of another checkpoint: exporting the same checkpoint again (another
    format or opset) replaces its files, as a build does; another model's export is somebody's result, kept."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out={out_dir} is a file; out= names the folder the export goes into, e.g. out=deploy/")
    earlier = out_dir / EXPORT_FILE
    if not earlier.is_file():
        return
    try:
        source = json.loads(earlier.read_text())["metadata"]["source_checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        source = None
    if source != str(checkpoint):
        raise ConfigError(
            f"out={out_dir} holds the export of {source or 'another checkpoint'} ({EXPORT_FILE}); pass another "
            "out= folder, or move that export away first"
        )


def source_run(run: RestoredRun) -> dict[str, Any]:
    """The training run's commit (null for runs from before provenance, or outside a checkout) and precision."""
    origin = run.config.get("provenance") or {}
    code = origin.get("code") or {}
    return {
        "commit": code.get("commit"),
        "dirty": code.get("dirty"),
        "precision": origin.get("precision", run.precision),
        "started": origin.get("started"),
    }


def written(path: Path) -> dict[str, Any]:
    """An entry of export.json's ``files``: every file the command wrote, with its size."""
    return {"path": str(path), "bytes": path.stat().st_size}


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan")


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export, verify and describe one checkpoint; returns what ``export.json`` holds."""
    started = time.perf_counter()
    for name in ("onnxscript", "onnx_ir", "onnxruntime"):
        # The exporter's and quantizer's step-by-step INFO lines are noise in a command's output.
        logging.getLogger(name).setLevel(logging.WARNING)
    # Their warnings (a traceback among them) are about an opset the exporter cannot write, which the error line says.
    for name in ("onnxscript.version_converter", "torch.onnx._internal.exporter._compat"):
        logging.getLogger(name).setLevel(logging.ERROR)
    check_options(cfg)
    # Torch and Lightning are imported once Hydra has parsed the command line: --help and a config error answer
    # without their seconds of import, and a broken install is one error line too.
    from fmnist_lightning.training.checkpoint_files import restore_run

    out_dir = Path(cfg.out).expanduser() if cfg.out else Path(HydraConfig.get().runtime.output_dir)
    check_out_dir(out_dir, Path(cfg.ckpt_path).expanduser().resolve())
    run = restore_run(cfg.ckpt_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Written into a folder of its own and moved into out= only once the file computes what the checkpoint
    # computes: a failed export leaves an earlier one there (its files and export.json) as it was.
    with staging_folder(out_dir) as staging:
        summary = write_verified(cfg, run, Path(staging))
        for entry in summary["files"]:
            staged = Path(entry["path"])
            os.replace(staged, out_dir / staged.name)
            entry["path"] = str(out_dir / staged.name)
    summary["file"] = summary["files"][0]["path"]
    if "quantized" in summary:
        summary["quantized"]["file"] = summary["files"][1]["path"]
    parity_line = summary.pop("parity_line")
    print(f"Exported {summary['file']} ({summary['bytes']:,} bytes); {parity_line}")
    if "quantized" in summary:
        q = summary["quantized"]
        print(
            f"int8 ({q['mode']}): {q['file']} ({q['bytes']:,} bytes, {q['size_ratio']:.0%} of fp32); "
            f"test accuracy {q['test_accuracy']:.4f} ({q['accuracy_change']:+.4f})"
        )
    summary["wall_time_s"] = round(time.perf_counter() - started, 2)
    write_json(out_dir / EXPORT_FILE, summary)
    print(f"Wrote {out_dir / EXPORT_FILE}")
    return summary


def write_verified(cfg: DictConfig, run: RestoredRun, out_dir: Path) -> dict[str, Any]:
    """Write the served file (and its int8 copy) into ``out_dir`` and check it against the checkpoint on the
    official test images; raises ExportError if they disagree. Returns export.json's content but its timing."""
    from fmnist_lightning.deploy.parity import check_parity, reference_probabilities
    from fmnist_lightning.deploy.served_model import (
        ServedModel,
        export_onnx,
        export_pt2,
        export_torchscript,
        served_metadata,
    )

    mean, std = run.normalization
    datamodule = run.datamodule(root=cfg.data_root)
    datamodule.setup("test")
    test_set = datamodule.test_set
    assert test_set is not None  # setup("test") read it, or raised
    images = test_set.images.float() / 255
    labels = test_set.labels.numpy()
    reference = reference_probabilities(run.module, images, mean, std, int(cfg.batch_size)).numpy()

    name = str(run.config.get("model", {}).get("name") or "model")
    path = out_dir / f"{name}{FORMATS[cfg.format]}"
    test_accuracy = _accuracy(reference, labels)
    metadata = served_metadata(name, mean, std, run.path.resolve(), test_accuracy, len(labels), source_run(run))
    served = ServedModel(run.module.net, mean, std).eval()
    if cfg.format == "onnx":
        # Another opset than conf/export.yaml's, the one the tests export with.
        chosen = int(cfg.opset) != int(OmegaConf.load(CONF_DIR / "export.yaml").opset)
        export_onnx(served, path, int(cfg.opset), metadata, opset_chosen=chosen)
    elif cfg.format == "pt2":
        export_pt2(served, path, metadata)
    else:
        export_torchscript(served, path, metadata)

    x = images.numpy()
    result = check_parity(path, x, reference, float(cfg.atol))
    ties = f" but {result['near_ties']} near-ties" if result["near_ties"] else ""
    summary: dict[str, Any] = {
        "file": str(path),
        "format": cfg.format,
        "bytes": path.stat().st_size,
        "metadata": metadata,
        "files": [written(path)],
        "opset": int(cfg.opset) if cfg.format == "onnx" else None,
        "parity": {k: v for k, v in result.items() if k != "probs"},
        "parity_line": f"parity on {len(x):,} test images: top-1 identical{ties}, "
        f"max |dp| {result['max_abs_prob_diff']:.1e}; test accuracy {test_accuracy:.4f}",
    }
    if cfg.quantize:
        summary["quantized"] = quantized_copy(path, cfg, run, (x, labels), reference, test_accuracy)
        summary["files"].append(written(Path(summary["quantized"]["file"])))
    return summary


def quantized_copy(
    fp32: Path,
    cfg: DictConfig,
    run: RestoredRun,
    test: tuple[np.ndarray, np.ndarray],
    reference: np.ndarray,
    test_accuracy: float,
) -> dict[str, Any]:
    """Write the int8 copy of ``fp32`` and measure it on the test images; its entry in export.json."""
    from fmnist_lightning.deploy.parity import parity

    images, labels = test
    train_images = _calibration_images(run, cfg)
    int8 = quantize(fp32, cfg.quantize, train_images)
    quantized = parity(int8, images, reference, float(cfg.int8_atol))
    int8_accuracy = _accuracy(quantized["probs"], labels)
    entry = {
        "file": str(int8),
        "mode": cfg.quantize,
        "bytes": int8.stat().st_size,
        "size_ratio": int8.stat().st_size / fp32.stat().st_size,
        "test_accuracy": int8_accuracy,
        "accuracy_change": int8_accuracy - test_accuracy,
        "top1_differ_from_checkpoint": quantized["top1_differ"],
        "near_ties": quantized["near_ties"],
        "atol": quantized["atol"],
        "max_abs_prob_diff": quantized["max_abs_prob_diff"],
        "calibration_images": len(train_images) if cfg.quantize == "static" else 0,
    }
    return entry


def _calibration_images(run: RestoredRun, cfg: DictConfig) -> np.ndarray:
    """The first ``calibration_images`` training images of the run's own training split, as [0, 1] floats."""
    datamodule = run.datamodule(root=cfg.data_root)
    datamodule.setup("fit")
    train_set = datamodule.train_set
    assert train_set is not None  # setup("fit") read it, or raised
    images = train_set.images[: int(cfg.calibration_images)]
    return (images.float() / 255).numpy()


# Lightning's per-Trainer info lines are noise in a command's output.
cli = hydra_command("export", export, quiet_trainers=True)


if __name__ == "__main__":
    cli()
