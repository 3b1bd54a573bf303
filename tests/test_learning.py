"""Training learns: a run on real Fashion-MNIST images ends far above chance, its loss falls epoch by epoch, and the
size it reports of its model is the model's."""

from __future__ import annotations

import csv
from pathlib import Path

from fmnist_lightning.data.fashion_mnist import NUM_CLASSES
from fmnist_lightning.train import train

IMAGE_PIXELS = 28 * 28


def epoch_losses(run: Path) -> list[float]:
    """train/loss per epoch, in order, from the run's metrics.csv."""
    with (run / "csv" / "metrics.csv").open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def test_a_run_learns_and_reports_its_model_as_it_is(make_cfg, tmp_path: Path) -> None:
    # Multinomial logistic regression: 500 training images, 5 epochs of the default optimizer and schedule.
    metrics = train(make_cfg("model=linear", "trainer.max_epochs=5", output_dir=tmp_path / "run"))
    chance = 1 / NUM_CLASSES
    assert metrics["test/acc"] > 5 * chance, metrics  # 200 test images: a model that learned nothing stays near 0.1
    assert metrics["val/acc_best"] > 5 * chance, metrics
    losses = epoch_losses(tmp_path / "run")
    assert len(losses) == 5 and losses[-1] < 0.7 * losses[0], losses
    # One weight per pixel and class and a bias per class; a multiply and an add per weight (torch's FLOP count).
    assert metrics["params"] == IMAGE_PIXELS * NUM_CLASSES + NUM_CLASSES
    assert metrics["flops_per_image"] == 2 * IMAGE_PIXELS * NUM_CLASSES
