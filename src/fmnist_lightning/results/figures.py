"""Result figures: curves, confusion matrices, per-class accuracy, image grids (labelled with class names),
and the learning-rate range test.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``) and
rendered by the Agg canvas, so nothing touches pyplot's global state or needs a
display; the same figure can be saved as a PNG or handed to TensorBoard's ``add_figure``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from fmnist_lightning.data.fashion_mnist import CLASS_NAMES
from fmnist_lightning.training.lr_range_test import SKIP_BEGIN, lr_override

MISTAKE_COLOUR = "tab:red"
CORRECT_COLOUR = "black"
DPI = 120

# history: metric name -> {epoch (0-based, as logged): value}
History = Mapping[str, Mapping[int, float]]


def save_figure(fig: Figure, path: Path) -> Path:
    """Write the figure as a PNG and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def curves_figure(history: History, marked_epoch: int | None = None, label: str = "best epoch") -> Figure:
    """Loss and accuracy per epoch, training against validation; a dashed line marks ``marked_epoch``.

    Epochs are shown counting from 1, as in the report; ``marked_epoch`` is 0-based like the logs.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, quantity in zip(fig.subplots(1, 2), ("loss", "acc"), strict=True):
        for stage, style in (("train", "-o"), ("val", "-s")):
            series = history.get(f"{stage}/{quantity}") or {}
            if series:
                epochs = sorted(series)
                ax.plot([e + 1 for e in epochs], [series[e] for e in epochs], style, label=stage, markersize=4)
        if marked_epoch is not None:
            ax.axvline(marked_epoch + 1, color="grey", linestyle="--", label=f"{label} ({marked_epoch + 1})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy" if quantity == "acc" else "loss")
        ax.set_title("Accuracy" if quantity == "acc" else "Loss")
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix_figure(confmat: Tensor, normalized: bool = False, title: str = "Confusion matrix") -> Figure:
    """The matrix with true classes as rows and predicted classes as columns, every cell annotated.

    ``normalized`` divides each row by its total, so the diagonal reads as per-class accuracy
    whatever the class sizes.
    """
    counts = confmat.detach().cpu().long()
    shown = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1) if normalized else counts.float()
    n = len(CLASS_NAMES)
    fig = Figure(figsize=(8.5, 7.5), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shown.numpy(), cmap="Blues", vmin=0, vmax=1 if normalized else max(float(shown.max()), 1))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class" if normalized else "images")
    ax.set_xticks(range(n), labels=CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=CLASS_NAMES)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title} (row-normalised)" if normalized else f"{title} (counts)")
    # Dark cells get light text so every number stays readable.
    dark = float(shown.max()) / 2
    for i in range(n):
        for j in range(n):
            value = float(shown[i, j])
            text = f"{value:.2f}" if normalized else str(int(counts[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if value > dark else "black")
    return fig


def per_class_accuracy_figure(accuracy: Tensor, title: str = "Per-class accuracy") -> Figure:
    """Horizontal bars, one per class, labelled with the accuracy."""
    values = [float(v) for v in accuracy.detach().cpu()]
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(range(len(CLASS_NAMES)), values, color="tab:blue")
    ax.set_yticks(range(len(CLASS_NAMES)), labels=CLASS_NAMES)
    ax.invert_yaxis()  # first class at the top, as in the tables
    ax.bar_label(bars, labels=[f"{v:.1%}" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, 1.12)  # room for the labels beside full bars
    ax.set_xlabel("accuracy (recall)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def prediction_grid_figure(
    images: Tensor, targets: Tensor, probs: Tensor, title: str = "Predictions", ncols: int = 8
) -> Figure:
    """Images with their true and predicted class (and its probability); mistakes in red with a red frame."""
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(1.6 * ncols, 1.9 * nrows + 0.4), layout="constrained")
    fig.suptitle(title)
    pixels = images.detach().cpu().float()
    low, high = float(pixels.min()) if n else 0.0, float(pixels.max()) if n else 1.0
    confidence, preds = probs.detach().cpu().max(dim=1)
    for k, ax in enumerate(fig.subplots(nrows, ncols, squeeze=False).flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(pixels[k, 0].numpy(), cmap="gray", vmin=low, vmax=high)
        wrong = int(preds[k]) != int(targets[k])
        colour = MISTAKE_COLOUR if wrong else CORRECT_COLOUR
        ax.set_title(
            f"true: {CLASS_NAMES[int(targets[k])]}\npred: {CLASS_NAMES[int(preds[k])]} {float(confidence[k]):.0%}",
            fontsize=7,
            color=colour,
        )
        if wrong:
            for spine in ax.spines.values():
                spine.set_edgecolor(MISTAKE_COLOUR)
                spine.set_linewidth(2)
    return fig


def lr_find_figure(lrs: list[float], losses: list[float], suggestion: float, title: str) -> Figure:
    """Smoothed training loss against learning rate on a log axis, the suggestion marked and labelled."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    # Lightning's bias correction of its running mean is one step off (it divides by 1 - 0.98^(n+1) after
    # n steps): the curve starts at about half the real loss and climbs to it over a few dozen steps, which
    # reads as a loss that rises at tiny rates. The first steps, which the suggestion ignores, are greyed.
    ax.plot(
        lrs[: SKIP_BEGIN + 1],
        losses[: SKIP_BEGIN + 1],
        color="0.7",
        label=f"first {SKIP_BEGIN} steps (smoothing warm-up, not used)",
    )
    ax.plot(lrs[SKIP_BEGIN:], losses[SKIP_BEGIN:], color="tab:blue", label="training loss (smoothed)")
    at = min(range(len(lrs)), key=lambda i: abs(lrs[i] - suggestion))
    ax.axvline(suggestion, color="tab:red", linestyle="--", linewidth=1)
    ax.plot([suggestion], [losses[at]], "o", color="tab:red", label=f"suggestion: {lr_override(suggestion)}")
    ax.annotate(
        f"{suggestion:.2e}", (suggestion, losses[at]), xytext=(8, 8), textcoords="offset points", color="tab:red"
    )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return fig
