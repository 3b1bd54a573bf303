"""Figures and reports: class names everywhere, the numbers they show, and which files a run gets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torchmetrics.functional.classification import multiclass_confusion_matrix

from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from fmnist_lightning.data.idx_files import load_split
from fmnist_lightning.results.figures import (
    CORRECT_COLOUR,
    MISTAKE_COLOUR,
    confusion_matrix_figure,
    curves_figure,
    prediction_grid_figure,
)
from fmnist_lightning.results.report import (
    CONFUSION_NORMALIZED_PNG,
    CONFUSION_PNG,
    CURVES_PNG,
    MISTAKES_PNG,
    PER_CLASS_PNG,
    REPORT_MD,
    RunFacts,
    read_history,
    write_report,
)
from fmnist_lightning.results.split_metrics import compute_metrics, confident_mistakes, most_confused_pairs
from fmnist_lightning.train import train

# Known mistakes planted in otherwise correct predictions: (true class, predicted class, how many).
PLANTED = [
    (CLASS_NAMES.index("Shirt"), CLASS_NAMES.index("T-shirt/top"), 3),
    (CLASS_NAMES.index("Coat"), CLASS_NAMES.index("Pullover"), 2),
    (CLASS_NAMES.index("Pullover"), CLASS_NAMES.index("Coat"), 2),
    (CLASS_NAMES.index("Sneaker"), CLASS_NAMES.index("Sandal"), 1),
]


@pytest.fixture
def planted(data_root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real test images, their labels, and one-hot-ish probabilities that are right except for PLANTED."""
    images, targets = load_split(data_root, "test")
    preds = targets.clone()
    for true, predicted, count in PLANTED:
        preds[torch.nonzero(targets == true).flatten()[:count]] = predicted
    # Confidence grows with the index, so the most confident mistakes are known.
    confidence = torch.linspace(0.5, 0.99, targets.numel())
    probs = torch.full((targets.numel(), NUM_CLASSES), 0.0)
    probs[torch.arange(targets.numel()), preds] = confidence
    probs += (1 - probs.sum(1, keepdim=True)) / NUM_CLASSES
    return images, targets, probs


def _cell_texts(ax) -> dict[tuple[int, int], str]:
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}


def test_confusion_matrix_is_labelled_with_class_names_and_counts(planted) -> None:
    _, targets, probs = planted
    confmat = multiclass_confusion_matrix(probs, targets, num_classes=NUM_CLASSES)
    ax = confusion_matrix_figure(confmat).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASS_NAMES)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)
    cells = _cell_texts(ax)
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            assert cells[i, j] == str(int(confmat[i, j]))

    normalized = _cell_texts(confusion_matrix_figure(confmat, normalized=True).axes[0])
    for i in range(NUM_CLASSES):
        row = [float(normalized[i, j]) for j in range(NUM_CLASSES)]
        expected = (confmat[i].float() / confmat[i].sum()).tolist()
        assert row == pytest.approx(expected, abs=0.005)  # printed with two decimals


def test_prediction_grid_names_classes_and_marks_mistakes(planted) -> None:
    images, targets, probs = planted
    index = torch.cat([confident_mistakes(targets, probs, k=len(PLANTED)), torch.arange(len(PLANTED))])
    fig = prediction_grid_figure(images[index], targets[index], probs[index])
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == index.numel()
    for ax, i in zip(titled, index.tolist(), strict=True):
        pred = int(probs[i].argmax())
        assert f"true: {CLASS_NAMES[int(targets[i])]}" in ax.get_title()
        assert f"pred: {CLASS_NAMES[pred]}" in ax.get_title()
        colour = MISTAKE_COLOUR if pred != int(targets[i]) else CORRECT_COLOUR
        assert ax.title.get_color() == colour


def test_most_confused_pairs_and_confident_mistakes(planted) -> None:
    _, targets, probs = planted
    confmat = multiclass_confusion_matrix(probs, targets, num_classes=NUM_CLASSES)
    pairs = most_confused_pairs(confmat)
    # Coat/Pullover (2 + 2) beats Shirt/T-shirt (3 + 0); every planted pair appears, nothing else.
    totals = {}
    for true, predicted, count in PLANTED:
        key = tuple(sorted((true, predicted)))
        totals[key] = totals.get(key, 0) + count
    assert [(a, b) for a, b, *_ in pairs] == sorted(totals, key=lambda k: -totals[k])
    assert [ab + ba for *_, ab, ba in pairs] == sorted(totals.values(), reverse=True)

    wrong = confident_mistakes(targets, probs, k=NUM_CLASSES)
    confidence = probs.max(1).values
    assert (probs[wrong].argmax(1) != targets[wrong]).all()
    assert torch.all(confidence[wrong][:-1] >= confidence[wrong][1:])
    assert wrong.numel() == sum(count for *_, count in PLANTED)


def test_curves_come_from_the_csv_logger(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="csv", version="")
    losses = {"train/loss": [2.0, 1.5, 1.2], "val/loss": [2.1, 1.7, 1.6]}
    accs = {"train/acc": [0.3, 0.5, 0.6], "val/acc": [0.28, 0.45, 0.5]}
    for epoch in range(3):
        # Lightning logs training and validation metrics as separate rows of the same epoch.
        logger.log_metrics(
            {"train/loss": losses["train/loss"][epoch], "train/acc": accs["train/acc"][epoch], "epoch": epoch},
            step=epoch,
        )
        logger.log_metrics(
            {"val/loss": losses["val/loss"][epoch], "val/acc": accs["val/acc"][epoch], "epoch": epoch}, step=epoch
        )
    logger.save()
    history = read_history(Path(logger.experiment.metrics_file_path))
    for name, values in {**losses, **accs}.items():
        assert history[name] == pytest.approx(dict(enumerate(values)))

    best = 2
    _loss_ax, acc_ax = curves_figure(history, best).axes
    plotted = {line.get_label(): list(line.get_ydata()) for line in acc_ax.lines}
    assert plotted["train"] == pytest.approx(accs["train/acc"]) and plotted["val"] == pytest.approx(accs["val/acc"])
    assert list(acc_ax.lines[-1].get_xdata()) == [best + 1, best + 1]  # epochs shown from 1


def test_report_from_an_evaluation(planted, tmp_path: Path) -> None:
    images, targets, probs = planted
    evaluation = compute_metrics("test", images, targets, probs)
    report = write_report(tmp_path, evaluation, RunFacts(title="Planted", config={}, history_csv=None))
    for name in (CONFUSION_PNG, CONFUSION_NORMALIZED_PNG, PER_CLASS_PNG, MISTAKES_PNG):
        assert (tmp_path / name).is_file()
    assert not (tmp_path / CURVES_PNG).exists()  # no metrics log, so no curves
    text = report.read_text()
    assert f"{evaluation.accuracy:.2%}" in text
    for name in CLASS_NAMES:
        assert f"| {name} |" in text
    assert "| Coat / Pullover |" in text or "| Pullover / Coat |" in text
    assert "Shirt as T-shirt/top" in text


def test_run_without_test_still_gets_curves_and_report(make_cfg) -> None:
    cfg = make_cfg(
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "test=false",
        figures=True,
    )
    train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / CURVES_PNG).is_file() and not (run / CONFUSION_PNG).exists()
    text = (run / REPORT_MD).read_text()
    assert "No evaluation in this run" in text and "best epoch" in text
