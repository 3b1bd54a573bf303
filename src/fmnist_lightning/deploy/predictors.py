"""Classifiers of Fashion-MNIST-like uint8 images, from a checkpoint or from an exported file.

Shared by ``fmnist-predict`` and ``fmnist-demo``, so the page and the CSV give the same classes and
probabilities for the same file. The exported path imports neither torch nor Lightning: torch is
imported inside ``checkpoint_classifier`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fmnist_lightning.deploy.runtime import ExportedModel

if TYPE_CHECKING:
    from fmnist_lightning.training.checkpoint_files import RestoredRun

# uint8 images [N, 1, 28, 28] -> probabilities [N, classes]
Classifier = Callable[[np.ndarray], np.ndarray]
# (LightningModule, DataLoader of normalised images) -> probabilities [N, classes] as a CPU tensor.
# Passed in by the commands (results.split_metrics runs it on a quiet Trainer): deploy does not import results.
ModulePredictor = Callable[[Any, Any], Any]


def checkpoint_classifier(run: RestoredRun, batch_size: int, predictor: ModulePredictor) -> Classifier:
    """The checkpoint's LightningModule on the run's own normalisation; TTA as ``run.module.tta`` says at call time."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from fmnist_lightning.data.datamodule import normalize

    mean, std = run.normalization

    def classify(images: np.ndarray) -> np.ndarray:
        loader = DataLoader(TensorDataset(normalize(torch.from_numpy(images), mean, std)), batch_size=batch_size)
        return predictor(run.module, loader).numpy()

    return classify


def exported_classifier(model: ExportedModel, batch_size: int, tta: bool) -> Classifier:
    """An exported model: [0, 1] floats in, probabilities out; with ``tta`` averaged with the mirror image."""

    def classify(images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) / 255
        probs = model.probabilities(x, batch_size)
        if tta:
            probs = (probs + model.probabilities(x[..., ::-1], batch_size)) / 2
        return probs

    return classify


def without_tta(run: RestoredRun, classify: Classifier) -> Classifier:
    """``classify`` (a ``checkpoint_classifier`` of ``run``, whose module uses TTA) with the mirror image left out."""

    def plain(images: np.ndarray) -> np.ndarray:
        run.module.tta = False
        try:
            return classify(images)
        finally:
            run.module.tta = True

    return plain
