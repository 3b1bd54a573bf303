"""Reading checkpoints safely, and rebuilding a trained model and its data from one alone.

Every checkpoint carries the run's resolved config (``training.callbacks.config_in_checkpoints``), so
evaluate, predict and export need nothing but the file: the backbone, the LightningModule
and the datamodule (same normalisation, same validation split) come from it. Checkpoints
written before the package was split into concern packages store the old ``_target_``
paths; those are mapped to today's when the config is read.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import HydraException
from hydra.utils import instantiate

from fmnist_lightning.config.hydra_compat import ALLOWED
from fmnist_lightning.config.run_record import CONFIG_KEY
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.fashion_mnist import NORMALIZATION
from fmnist_lightning.errors import CheckpointError, ConfigError, DataError, first_line
from fmnist_lightning.training.classifier import ImageClassifier, fill_missing_accumulators

# Modules of the flat layout (before 0.2) whose classes a stored config names, and where they live now.
LEGACY_MODULES = {
    "fmnist_lightning.module": "fmnist_lightning.training.classifier",
    "fmnist_lightning.data": "fmnist_lightning.data.datamodule",
    "fmnist_lightning.augment": "fmnist_lightning.data.transforms",
    "fmnist_lightning.policies": "fmnist_lightning.data.policies",
    "fmnist_lightning.models": "fmnist_lightning.models.registry",
    "fmnist_lightning.loggers": "fmnist_lightning.training.csv_logger",
    "fmnist_lightning.sweep": "fmnist_lightning.results.sweep_callback",
}
# The flat callbacks.py held every callback; each has a module of its own now.
LEGACY_CALLBACKS = {
    "RunRecord": "fmnist_lightning.training.callbacks.config_in_checkpoints",
    "InterruptCheckpoint": "fmnist_lightning.training.callbacks.interrupt_checkpoint",
    "RngState": "fmnist_lightning.training.callbacks.rng_state",
    "RunClock": "fmnist_lightning.training.callbacks.run_clock",
    "FiniteLossGuard": "fmnist_lightning.training.callbacks.loss_guard",
    "OptunaPruning": "fmnist_lightning.training.callbacks.optuna_pruning",
    "LearningRateTag": "fmnist_lightning.training.callbacks.lr_tag",
    "EMA": "fmnist_lightning.training.callbacks.ema",
    "AugmentationPreview": "fmnist_lightning.results.tensorboard_figures",
    "EvaluationFigures": "fmnist_lightning.results.tensorboard_figures",
}


# Modules renamed since (2026-12-06) so that a module's name tells it from its neighbours.
RENAMED_MODULES = {
    "fmnist_lightning.training.loggers": "fmnist_lightning.training.csv_logger",
    "fmnist_lightning.training.callbacks.run_record": "fmnist_lightning.training.callbacks.config_in_checkpoints",
    "fmnist_lightning.training.callbacks.checkpointing": "fmnist_lightning.training.callbacks.interrupt_checkpoint",
}


def current_target(target: str) -> str:
    """Today's import path of a ``_target_`` that an older checkpoint stored (the flat layout, a renamed module)."""
    module, _, name = target.rpartition(".")
    if module == "fmnist_lightning.callbacks" and name in LEGACY_CALLBACKS:
        module = LEGACY_CALLBACKS[name]
    module = LEGACY_MODULES.get(module, module)
    return f"{RENAMED_MODULES.get(module, module)}.{name}" if module else target


def with_current_targets(node: Any) -> Any:
    """A copy of a stored config with every ``_target_`` mapped by ``current_target``."""
    if isinstance(node, dict):
        return {
            k: current_target(v) if k == "_target_" and isinstance(v, str) else with_current_targets(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [with_current_targets(v) for v in node]
    return node


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint as a dict, read without running any code stored in it; one-line errors otherwise."""
    import torch

    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}; pass the file of a run, e.g. "
            "ckpt_path=outputs/runs/<time>/checkpoints/last.ckpt"
        )
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; pass a checkpoint file, e.g. {path}/last.ckpt")
    if not zipfile.is_zipfile(path):
        exported = path.suffix in (".onnx", ".pt2", ".pt")
        raise CheckpointError(
            f"{path} is not a readable checkpoint (not a PyTorch checkpoint archive); "
            + (
                f"an exported model is classified with fmnist-predict model={path}"
                if exported
                else "pass a .ckpt a training run wrote (its checkpoints/ folder), whole: a copy cut short reads so"
            )
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"refusing to load {path}: it holds a Python object ({unsafe.group(1)}) that would run code when "
                "unpickled; fmnist_lightning never writes such objects, so the file comes from elsewhere or was "
                "tampered with"
            ) from exc
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line(exc)})") from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({first_line(exc)})") from exc
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict)")
    if not isinstance(checkpoint.get(CONFIG_KEY), dict):
        raise CheckpointError(
            f"{path} has no {CONFIG_KEY}: it was not written by a fmnist_lightning training run, "
            "so the model cannot be rebuilt from it"
        )
    return checkpoint


def run_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The training run's resolved config stored in the checkpoint, with today's ``_target_`` paths."""
    return with_current_targets(checkpoint[CONFIG_KEY])


def _build(config: dict[str, Any], key: str, **kwargs: Any) -> Any:
    """Instantiate the checkpoint's ``config[key]``; a config this code cannot build is a CheckpointError."""
    try:
        return instantiate(config[key], **ALLOWED, **kwargs)
    except (HydraException, KeyError, TypeError, ValueError) as exc:
        # Hydra wraps the constructor's own error; that one says what is wrong.
        cause = exc.__cause__ or exc
        raise CheckpointError(
            f"cannot rebuild the run's {key} from the checkpoint's config: {first_line(cause)}"
        ) from exc


def module_from_checkpoint(checkpoint: dict[str, Any]) -> ImageClassifier:
    """The LightningModule of the run, with the checkpoint's weights, in eval mode."""
    config = run_config(checkpoint)
    net = _build(config, "model")
    # The optimizer and scheduler factories are built but never called: evaluation does not train.
    # No teacher: distillation only shapes training, and its checkpoint need not be where it was.
    module = _build(config, "module", net=net, **({"distill": None} if "distill" in config["module"] else {}))
    fill_missing_accumulators(module, checkpoint["state_dict"])
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"the checkpoint's weights do not fit its model config: {first_line(exc)}") from exc
    return module.eval()


def datamodule_from_config(
    config: dict[str, Any], root: str | None = None, batch_size: int | None = None
) -> FashionMNISTDataModule:
    """The run's datamodule without augmentation; ``root``/``batch_size`` replace the stored values when given."""
    data = {k: v for k, v in config["data"].items() if k not in ("augmentation", "mix")}
    if root is not None:
        data["root"] = str(root)
    if batch_size is not None:
        data["eval_batch_size"] = int(batch_size)
    datamodule = _build({"data": data}, "data", augmentation=None)
    try:
        datamodule.prepare_data()
    except DataError as exc:
        # The message names training's data.root; these commands take the folder as data_root.
        raise DataError(f"{exc} (here: data_root=<folder>)") from exc
    return datamodule


def normalization(config: dict[str, Any]) -> tuple[float, float]:
    """(mean, std) the run's images were normalised with."""
    mode = config["data"].get("normalize", "dataset")
    if mode not in NORMALIZATION:
        raise ConfigError(
            f"the checkpoint's data.normalize={mode!r} is unknown; expected one of {', '.join(NORMALIZATION)}"
        )
    return NORMALIZATION[mode]


def check_fits(path: str | Path, module: L.LightningModule, model_name: str, resuming: bool = False) -> None:
    """Refuse a checkpoint whose weights cannot continue ``module`` (this run's model), before the Trainer loads it.
    ``resuming``: the checkpoint is this run's own (``resume=``), so the hint names what to add to that line."""
    checkpoint = load_checkpoint(path)
    expected = module.state_dict()
    stored = checkpoint["state_dict"]
    fill_missing_accumulators(module, stored)
    mismatched = sorted(
        k
        for k in expected.keys() | stored.keys()
        if k not in expected or k not in stored or expected[k].shape != stored[k].shape
    )
    if mismatched:
        trained = run_config(checkpoint).get("choices", {}).get("model")
        options = f"model={trained} and the other options" if trained else "the options"
        if resuming:
            # resume= composes the run again from today's conf/: a preset may have moved on since the run began.
            hint = (
                "a run resumes with the network it was trained with: drop a model= or experiment= change from the "
                f"line, or, where conf/ has changed since the run began, add {options} it was trained with after "
                "resume=<run dir>"
            )
        else:
            hint = f"pass {options} the checkpoint was trained with, or resume=<run dir> to reuse its config"
        raise CheckpointError(
            f"{path} holds a {trained or 'another'} model whose weights do not fit this run's model={model_name} "
            f"({len(mismatched)} tensors differ, e.g. {mismatched[0]}); {hint}"
        )


@dataclass
class RestoredRun:
    """A trained run rebuilt from its checkpoint: the file's content, the run's config and its LightningModule."""

    path: Path
    checkpoint: dict[str, Any]
    config: dict[str, Any]
    module: ImageClassifier

    @property
    def normalization(self) -> tuple[float, float]:
        return normalization(self.config)

    @property
    def precision(self) -> str | int | None:
        """The precision the run trained with (evaluating at another one is the caller's choice)."""
        return (self.config.get("trainer") or {}).get("precision")

    def datamodule(self, root: str | None = None, batch_size: int | None = None) -> FashionMNISTDataModule:
        return datamodule_from_config(self.config, root=root, batch_size=batch_size)


def restore_run(path: str | Path, tta: bool | None = None, tta_shift: int | None = None) -> RestoredRun:
    """The one way evaluate, predict and export read a checkpoint; ``tta`` and ``tta_shift`` (when given)
    replace the run's settings."""
    checkpoint = load_checkpoint(path)
    module = module_from_checkpoint(checkpoint)
    if tta is not None:
        module.tta = bool(tta)
    if tta_shift is not None:
        module.tta_shift = int(tta_shift)
    return RestoredRun(Path(path).expanduser(), checkpoint, run_config(checkpoint), module)
