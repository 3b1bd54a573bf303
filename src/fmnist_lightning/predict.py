"""``python -m fmnist_lightning.predict (ckpt_path=<file.ckpt> | model=<file.onnx|.pt>) inputs=<file or folder>``.

Also ``fmnist-predict``. Classifies ordinary images (PNG, JPEG, any size, colour or
grey). Each image is first made to look like a Fashion-MNIST image (``data.image_files``):
grey, a light garment on a black background, the object fitted into 28x28 keeping
its aspect ratio. A checkpoint then normalises it exactly as the run's training data;
a model exported by ``fmnist_lightning.export`` has that normalisation inside and runs
on onnxruntime (or the TorchScript loader) without importing Lightning.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.cli.commands import hydra_command
from fmnist_lightning.cli.hydra_entry import quiet_lightning_info, route_lightning_logs
from fmnist_lightning.config.checks import check_values, whole
from fmnist_lightning.config.output_dirs import refuse_foreign_file
from fmnist_lightning.data.image_files import (
    Result,
    input_files,
    is_predictions_csv,
    read_image,
    top_classes,
    write_csv,
)
from fmnist_lightning.deploy.predictors import Classifier, ModulePredictor, checkpoint_classifier, exported_classifier
from fmnist_lightning.errors import ConfigError, DataError

if TYPE_CHECKING:
    from fmnist_lightning.training.checkpoint_files import RestoredRun

log = logging.getLogger("fmnist_lightning")

EXIT_SOME_FAILED = 1
OPTION_CHECKS = (
    whole("top_k", 1, "a number of classes >= 1", "top_k=3"),
    whole("batch_size", 1, "a batch size >= 1", "batch_size=256"),
)
USAGE = "python -m fmnist_lightning.predict ckpt_path=<file.ckpt> (or model=<file.onnx>) inputs=<image or folder>"


def trainer_predictor(accelerator: str, precision: str | int | None) -> ModulePredictor:
    """Probabilities from a quiet Trainer on ``accelerator`` at ``precision`` (what evaluate and training's
    report use)."""
    from fmnist_lightning.results.split_metrics import predict_probs, prediction_trainer

    return lambda module, loader: predict_probs(
        prediction_trainer(accelerator=accelerator, precision=precision), module, loader
    )


def classifier(cfg: DictConfig) -> Classifier:
    """The checkpoint's classifier (its run's normalisation and precision), or the exported file's."""
    if not cfg.get("ckpt_path"):
        # Imported here: with an exported model (model=<file.onnx>) neither torch nor Lightning is imported.
        from fmnist_lightning.deploy.runtime import load_exported

        return exported_classifier(load_exported(cfg.model_file), int(cfg.batch_size), bool(cfg.tta))
    return restored_classifier(cfg)[0]


def restored_classifier(cfg: DictConfig) -> tuple[Classifier, RestoredRun]:
    """``cfg.ckpt_path``'s classifier (its run's normalisation and precision; ``cfg.tta`` or the run's TTA) and run."""
    from fmnist_lightning.training.checkpoint_files import restore_run

    route_lightning_logs()
    quiet_lightning_info()
    run = restore_run(cfg.ckpt_path, tta=cfg.tta)
    return checkpoint_classifier(run, int(cfg.batch_size), trainer_predictor(cfg.accelerator, run.precision)), run


def predict(cfg: DictConfig) -> list[Result]:
    """Classify every input file; per-file failures are reported and kept in the results, never fatal."""
    if OmegaConf.is_missing(cfg, "inputs") or not cfg.inputs:
        raise ConfigError(f"inputs is required: {USAGE}")
    if bool(cfg.get("ckpt_path")) == bool(cfg.get("model_file")):
        raise ConfigError(
            f"give exactly one of ckpt_path= (a training checkpoint) or model= (an exported file): {USAGE}"
        )
    check_values(cfg, OPTION_CHECKS)
    if cfg.csv:
        # Predicting again into one's own CSV replaces it (and never reads it as an input).
        ours = "a predictions file of this command"
        refuse_foreign_file(Path(cfg.csv).expanduser(), "csv", is_predictions_csv, ours, "predictions.csv")
    classify = classifier(cfg)
    inputs: Any = cfg.inputs if isinstance(cfg.inputs, str) else OmegaConf.to_container(cfg.inputs)
    # Earlier predict runs' logs too, so classifying "." twice gives the same answer.
    own_output = [Path(cfg.paths.output_dir), Path(cfg.paths.log_dir) / "predict"] + (
        [Path(cfg.csv)] if cfg.csv else []
    )
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
        for result, probs in zip(readable, classify(np.stack(images)), strict=True):
            result.probs = probs
            top = ", ".join(f"{name} {p:.3f}" for name, p in top_classes(probs, int(cfg.top_k)))
            print(f"{result.path}: {top}")
    if cfg.csv:
        write_csv(Path(cfg.csv), results, int(cfg.top_k))
        print(f"Wrote {cfg.csv}")
    return results


def predict_command(cfg: DictConfig) -> None:
    """Classify the inputs; exit 1 if any file could not be read, after classifying the others."""
    results = predict(cfg)
    failed = sum(r.error is not None for r in results)
    if failed:
        print(f"{failed} of {len(results)} files could not be classified", file=sys.stderr)
        raise SystemExit(EXIT_SOME_FAILED)


def model_file_arguments(args: list[str]) -> list[str]:
    """``args`` with ``model=<file>`` spelled ``model_file=<file>`` (the key of predict's and demo's configs):
    ``model`` is also the name of a config group, which Hydra would look the file up in."""
    return [f"model_file={a.partition('=')[2]}" if a.startswith("model=") else a for a in args]


cli = hydra_command("predict", predict_command, arguments=model_file_arguments)


if __name__ == "__main__":
    cli()
