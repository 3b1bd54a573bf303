"""Metrics of a model on one split: probabilities from ``trainer.predict``, metrics from torchmetrics.

Shared by training's end-of-run report, ``fmnist-evaluate`` and ``fmnist-predict`` (its
checkpoint path), so all compute the same numbers the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_stat_scores,
)

from fmnist_lightning.data.datamodule import FashionMNISTDataModule, normalize
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.training.builders import lightning_info_quiet
from fmnist_lightning.training.precision import AUTO, fast_precision

SPLITS = ("test", "val")


@dataclass
class Evaluation:
    """Predictions on one split and the metrics computed from them (per-class tensors are indexed by class)."""

    split: str
    images: Tensor  # uint8 [N, 1, 28, 28], as stored in the dataset
    targets: Tensor  # int64 [N]
    probs: Tensor  # float [N, classes]
    accuracy: float
    f1_macro: float
    precision: Tensor
    recall: Tensor
    f1: Tensor
    support: Tensor
    confmat: Tensor  # [true, predicted] counts

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for metrics.json."""
        per_class = {
            name: {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        }
        return {
            f"{self.split}/acc": self.accuracy,
            f"{self.split}/f1_macro": self.f1_macro,
            "images": int(self.targets.numel()),
            "per_class": per_class,
            # {true class: {predicted class: images}}
            "confusion_matrix": {
                true: dict(zip(CLASS_NAMES, map(int, row), strict=True))
                for true, row in zip(CLASS_NAMES, self.confmat, strict=True)
            },
        }


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"unknown split={split!r}; choose one of: {', '.join(SPLITS)}")


def split_dataset(datamodule: FashionMNISTDataModule, split: str) -> Any:
    """The datamodule's test set or its validation split (the run's seed and size, so the same images)."""
    check_split(split)
    datamodule.setup("test" if split == "test" else "fit")
    dataset = datamodule.test_set if split == "test" else datamodule.val_set
    if dataset is None:
        raise ConfigError("the run had no validation split (data.val_size=0); use split=test")
    return dataset


def split_loader(datamodule: FashionMNISTDataModule, dataset: Any) -> DataLoader:
    """The dataset's images normalised as the datamodule normalises them, in its eval batch size.

    Same batches as ``trainer.test`` sees, so the predictions (and the accuracy) are the same numbers.
    """
    images = normalize(dataset.images, datamodule.mean, datamodule.std)
    return DataLoader(TensorDataset(images, dataset.labels), batch_size=datamodule.eval_batch_size)


def prediction_trainer(
    accelerator: str = "auto", precision: str | int | None = None, limit_batches: int | float | None = None
) -> L.Trainer:
    """A quiet single-device Trainer for ``trainer.predict``: no logs, checkpoints or progress bar.
    ``precision="auto"`` picks as training does (``training.precision.fast_precision``)."""
    if str(precision) == AUTO:
        precision = fast_precision(accelerator)
    # Lightning's device banner is the run's to print, once; a report's or an evaluation's own Trainer stays quiet.
    with lightning_info_quiet():
        return L.Trainer(
            accelerator=accelerator,
            devices=1,
            precision=precision or "32-true",  # type: ignore[arg-type]  # a value of trainer.precision, checked there
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_predict_batches=limit_batches,
        )


def predict_probs(trainer: L.Trainer, module: L.LightningModule, loader: DataLoader) -> Tensor:
    """Class probabilities for every image the loader yields (``module.predict_step``), on the CPU as float32."""
    batches = trainer.predict(module, dataloaders=loader)
    if not batches:
        return torch.empty(0, NUM_CLASSES)
    return torch.cat([torch.as_tensor(b).float().cpu() for b in batches])


def compute_metrics(split: str, images: Tensor, targets: Tensor, probs: Tensor) -> Evaluation:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix (torchmetrics)."""
    args: dict[str, Any] = {"num_classes": NUM_CLASSES}
    return Evaluation(
        split=split,
        images=images,
        targets=targets,
        probs=probs,
        accuracy=float(multiclass_accuracy(probs, targets, average="micro", **args)),
        f1_macro=float(multiclass_f1_score(probs, targets, average="macro", **args)),
        precision=multiclass_precision(probs, targets, average=None, **args),
        recall=multiclass_recall(probs, targets, average=None, **args),
        f1=multiclass_f1_score(probs, targets, average=None, **args),
        # stat_scores columns: tp, fp, tn, fn, support
        support=multiclass_stat_scores(probs, targets, average=None, **args)[:, 4],
        confmat=multiclass_confusion_matrix(probs, targets, **args),
    )


def evaluate_split(
    module: L.LightningModule, datamodule: FashionMNISTDataModule, split: str, trainer: L.Trainer
) -> Evaluation:
    """Predict every image of the split (up to the trainer's predict limit) and compute the metrics."""
    dataset = split_dataset(datamodule, split)
    probs = predict_probs(trainer, module, split_loader(datamodule, dataset))
    n = probs.shape[0]
    return compute_metrics(split, dataset.images[:n], dataset.labels[:n], probs)


def per_class_accuracy(confmat: Tensor) -> Tensor:
    """Fraction of each true class predicted correctly (the recall): the diagonal over the row sums."""
    return confmat.diagonal().float() / confmat.sum(dim=1).clamp_min(1).float()


def most_confused_pairs(confmat: Tensor, k: int = 5) -> list[tuple[int, int, int, int]]:
    """The k class pairs mixed up most often, in either direction: ``(a, b, a_as_b, b_as_a)``, largest total first."""
    both_ways = confmat + confmat.T
    rows, cols = torch.triu_indices(NUM_CLASSES, NUM_CLASSES, offset=1)
    totals = both_ways[rows, cols]
    order = torch.argsort(totals, descending=True, stable=True)
    return [
        (int(rows[i]), int(cols[i]), int(confmat[rows[i], cols[i]]), int(confmat[cols[i], rows[i]]))
        for i in order[:k]
        if totals[i] > 0
    ]


def confident_mistakes(targets: Tensor, probs: Tensor, k: int) -> Tensor:
    """Indices of the (up to) k wrong predictions made with the highest probability, most confident first."""
    confidence, preds = probs.max(dim=1)
    wrong = torch.nonzero(preds != targets).flatten()
    order = torch.argsort(confidence[wrong], descending=True, stable=True)
    return wrong[order[:k]]
