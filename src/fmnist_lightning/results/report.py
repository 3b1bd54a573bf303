"""A run's results as files people can look at: PNG figures and ``report.md``, plus a terminal summary.

Training writes them into its run directory after testing; ``fmnist_lightning.evaluate``
writes the same files into its own output directory.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from fmnist_lightning.config.files import write_text_atomic
from fmnist_lightning.data.datamodule import FashionMNISTDataModule
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES
from fmnist_lightning.results.figures import (
    History,
    confusion_matrix_figure,
    curves_figure,
    per_class_accuracy_figure,
    prediction_grid_figure,
    save_figure,
)
from fmnist_lightning.results.split_metrics import (
    Evaluation,
    confident_mistakes,
    evaluate_split,
    most_confused_pairs,
    prediction_trainer,
)
from fmnist_lightning.training.classifier import ImageClassifier
from fmnist_lightning.training.provenance import describe

log = logging.getLogger(__name__)

CURVES_PNG = "curves.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSION_NORMALIZED_PNG = "confusion_matrix_normalized.png"
PER_CLASS_PNG = "per_class_accuracy.png"
MISTAKES_PNG = "confident_mistakes.png"
REPORT_MD = "report.md"
N_MISTAKES = 24  # three rows of eight
N_CONFUSED_PAIRS = 5
SPLIT_NAMES = {"test": "test set", "val": "validation split"}


@dataclass
class RunFacts:
    """What a report says besides the evaluation: where the model came from and how it was trained."""

    title: str
    config: dict[str, Any]
    checkpoint: str | None = None
    # The epoch whose weights were evaluated (0-based, as Lightning counts), and what to call it.
    epoch: int | None = None
    epoch_label: str = "best epoch"
    epochs: int | None = None
    val_acc_best: float | None = None
    wall_time_s: float | None = None
    tta: bool = False
    history_csv: Path | None = None


def read_history(csv_path: Path) -> dict[str, dict[int, float]]:
    """Per-epoch values of every metric in a CSVLogger ``metrics.csv`` (the last value logged in an epoch wins)."""
    history: dict[str, dict[int, float]] = {}
    with csv_path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for name, value in row.items():
                if name not in ("epoch", "step") and value not in (None, ""):
                    history.setdefault(name, {})[epoch] = float(value)
    return history


def csv_log_path(config: dict[str, Any]) -> Path | None:
    """Where the run's CSVLogger wrote ``metrics.csv``, from the stored logger config (None if it had none)."""
    for node in (config.get("logger") or {}).values():
        if isinstance(node, dict) and str(node.get("_target_", "")).endswith("CSVLogger"):
            version = node.get("version")
            if version is None:  # Lightning picked version_N at run time; the config does not say which
                return None
            return Path(str(node.get("save_dir", "."))) / str(node.get("name") or "") / str(version) / "metrics.csv"
    return None


def _load_history(facts: RunFacts) -> History | None:
    if facts.history_csv is None or not facts.history_csv.is_file():
        log.warning(
            "No CSV metrics log (%s); the report has no loss/accuracy curves", facts.history_csv or "no csv logger"
        )
        return None
    history = read_history(facts.history_csv)
    return history if any(k in history for k in ("train/loss", "val/loss")) else None


def write_figures(output_dir: Path, evaluation: Evaluation | None, facts: RunFacts) -> list[Path]:
    """Save every PNG that the available results allow; return their paths."""
    written = []
    history = _load_history(facts)
    if history is not None:
        written.append(save_figure(curves_figure(history, facts.epoch, facts.epoch_label), output_dir / CURVES_PNG))
    if evaluation is None:
        return written
    where = SPLIT_NAMES[evaluation.split]
    for normalized, name in ((False, CONFUSION_PNG), (True, CONFUSION_NORMALIZED_PNG)):
        fig = confusion_matrix_figure(evaluation.confmat, normalized, title=f"Confusion matrix, {where}")
        written.append(save_figure(fig, output_dir / name))
    fig = per_class_accuracy_figure(evaluation.recall, title=f"Per-class accuracy, {where}")
    written.append(save_figure(fig, output_dir / PER_CLASS_PNG))
    wrong = confident_mistakes(evaluation.targets, evaluation.probs, N_MISTAKES)
    if wrong.numel():
        fig = prediction_grid_figure(
            evaluation.images[wrong],
            evaluation.targets[wrong],
            evaluation.probs[wrong],
            title=f"Most confidently wrong, {where}",
        )
        written.append(save_figure(fig, output_dir / MISTAKES_PNG))
    return written


def _short_target(node: Any) -> str:
    return str(node.get("_target_", "")).rsplit(".", 1)[-1] if isinstance(node, dict) else str(node)


def _knobs(node: Any, skip: tuple[str, ...] = (), prefix: str = "") -> str:
    # A nested node (an ensemble's member, Muon's optimizer for the rest) shows as its own keys, prefixed.
    items = [
        _knobs(v, prefix=f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={v}"
        for k, v in (node.items() if isinstance(node, dict) else [])
        if not str(k).startswith("_") and k not in skip and v is not None
    ]
    return ", ".join(item for item in items if item)


def key_config(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The settings that decide a result, as (name, value) rows."""
    choices = config.get("choices") or {}
    model, optim = config.get("model") or {}, config.get("optim") or {}
    scheduler = (config.get("sched") or {}).get("scheduler")
    data, trainer, module = config.get("data") or {}, config.get("trainer") or {}, config.get("module") or {}
    # Hydra reports an unselected optional group as the string "None".
    experiment = choices.get("experiment")
    rows = [("experiment", str(experiment))] if experiment not in (None, "None") else []
    rows += [
        ("model", f"{model.get('name', choices.get('model', '?'))} ({_knobs(model, ('name',))})"),
        ("augmentation", str(choices.get("aug", "?"))),
        ("optimizer", f"{_short_target(optim)} ({_knobs(optim)})"),
        ("schedule", f"{_short_target(scheduler)} ({_knobs(scheduler)})" if scheduler else "none"),
        ("batch size", str(data.get("batch_size"))),
        ("max epochs", str(trainer.get("max_epochs"))),
        ("precision", str(trainer.get("precision"))),
        ("validation images", str(data.get("val_size"))),
        ("normalisation", str(data.get("normalize"))),
        ("label smoothing", str(module.get("label_smoothing"))),
        ("seed", str(config.get("seed"))),
    ]
    return rows


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _summary_rows(evaluation: Evaluation | None, facts: RunFacts) -> list[tuple[str, str]]:
    rows = []
    if facts.checkpoint:
        rows.append(("checkpoint", f"`{facts.checkpoint}`"))
    if evaluation is not None:
        n = evaluation.targets.numel()
        rows.append(
            ("evaluated on", f"{SPLIT_NAMES[evaluation.split]}, {n:,} images, TTA {'on' if facts.tta else 'off'}")
        )
        rows.append((f"{evaluation.split} accuracy", _pct(evaluation.accuracy)))
        rows.append((f"{evaluation.split} macro-F1", f"{evaluation.f1_macro:.4f}"))
    if facts.epoch is not None:
        of = f" of {facts.epochs}" if facts.epochs else ""
        val = f" (val/acc {_pct(facts.val_acc_best)})" if facts.val_acc_best is not None else ""
        rows.append((facts.epoch_label, f"{facts.epoch + 1}{of}{val}"))
    info = facts.config.get("model_info") or {}
    if "params" in info:
        flops = info.get("flops_per_image")
        rows.append(
            ("parameters", f"{info['params']:,}" + (f" ({flops / 1e6:.1f} M FLOPs per image)" if flops else ""))
        )
    if facts.wall_time_s is not None:
        rows.append(("wall time", f"{facts.wall_time_s:.1f} s"))
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def per_class_rows(evaluation: Evaluation) -> list[list[str]]:
    return [
        [
            name,
            f"{float(evaluation.precision[i]):.4f}",
            f"{float(evaluation.recall[i]):.4f}",
            f"{float(evaluation.f1[i]):.4f}",
            str(int(evaluation.support[i])),
        ]
        for i, name in enumerate(CLASS_NAMES)
    ]


PER_CLASS_HEADER = ["class", "precision", "recall (accuracy)", "F1", "images"]


def confused_pair_rows(evaluation: Evaluation) -> list[list[str]]:
    rows = []
    for a, b, a_as_b, b_as_a in most_confused_pairs(evaluation.confmat, N_CONFUSED_PAIRS):
        name_a, name_b = CLASS_NAMES[a], CLASS_NAMES[b]
        rows.append(
            [
                f"{name_a} / {name_b}",
                str(a_as_b + b_as_a),
                f"{a_as_b} {name_a} as {name_b}",
                f"{b_as_a} {name_b} as {name_a}",
            ]
        )
    return rows


def report_markdown(evaluation: Evaluation | None, facts: RunFacts, figures: list[Path]) -> str:
    lines = [f"# {facts.title}", ""]
    lines += [*_table(["", ""], [[k, v] for k, v in _summary_rows(evaluation, facts)]), ""]
    lines += ["## Key config", ""] + [f"- {k}: {v}" for k, v in key_config(facts.config)] + [""]
    if evaluation is None:
        lines += [
            "No evaluation in this run (test=false). Evaluate a checkpoint with "
            "`python -m fmnist_lightning.evaluate ckpt_path=<file>`.",
            "",
        ]
    else:
        where = SPLIT_NAMES[evaluation.split]
        lines += [f"## Per-class metrics ({where})", "", *_table(PER_CLASS_HEADER, per_class_rows(evaluation)), ""]
        pairs = confused_pair_rows(evaluation)
        lines += [f"## Most-confused class pairs ({where})", ""]
        lines += _table(["classes", "mistakes", "one way", "other way"], pairs) if pairs else ["No mistakes."]
        lines += [""]
    origin = facts.config.get("provenance")
    if origin:
        lines += ["## Provenance of the training run", "", *_table(["", ""], [list(r) for r in describe(origin)]), ""]
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def write_report(output_dir: Path, evaluation: Evaluation | None, facts: RunFacts) -> Path:
    """Write the PNGs and ``report.md`` into ``output_dir``; return the report's path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(output_dir, evaluation, facts)
    return write_text_atomic(output_dir / REPORT_MD, report_markdown(evaluation, facts, figures))


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row: list[str]) -> str:
        # Names left-aligned, numbers right-aligned.
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    return [line(header)] + [line(r) for r in rows]


def format_summary(evaluation: Evaluation, facts: RunFacts) -> str:
    """Plain-text results for the terminal: headline metrics, per-class table, confusion matrix."""
    lines = [f"{k}: {v.strip('`')}" for k, v in _summary_rows(evaluation, facts)]
    lines += ["", *_text_table(PER_CLASS_HEADER, per_class_rows(evaluation)), ""]
    lines.append("Confusion matrix (rows: true class, columns: predicted class)")
    matrix = [[name, *[str(int(v)) for v in evaluation.confmat[i]]] for i, name in enumerate(CLASS_NAMES)]
    lines += _text_table(["", *CLASS_NAMES], matrix)
    return "\n".join(lines)


def checkpoint_facts(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The epoch a checkpoint was saved in and the best val/acc up to then (absent values are omitted)."""
    facts: dict[str, Any] = {}
    if isinstance(checkpoint.get("epoch"), int):
        facts["epoch"] = checkpoint["epoch"]
    best = checkpoint.get("state_dict", {}).get("val_acc_best.max_value")
    if best is not None and math.isfinite(float(best)):
        facts["val_acc_best"] = float(best)
    return facts


def _csv_logger_file(trainer: L.Trainer) -> Path | None:
    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger):
            return Path(logger.experiment.metrics_file_path)
    return None


@rank_zero_only
def write_training_report(
    trainer: L.Trainer,
    module: ImageClassifier,
    datamodule: FashionMNISTDataModule,
    config: dict[str, Any],
    metrics: dict[str, Any],
    output_dir: Path,
    best: str | None = None,
) -> Path:
    """The run directory's PNGs and report.md, from the weights just tested (``best``, the best checkpoint's).

    The test set is predicted again, by the same code ``evaluate`` uses and over the same
    batches ``trainer.test`` saw, so the report's numbers are the ones in metrics.json.
    """
    evaluation = None
    if "test/acc" in metrics:
        trainer_config = config.get("trainer") or {}
        predictor = prediction_trainer(
            accelerator=trainer_config.get("accelerator") or "auto",
            precision=trainer_config.get("precision"),
            limit_batches=trainer.limit_test_batches,
        )
        evaluation = evaluate_split(module, datamodule, "test", predictor)
    facts = RunFacts(
        title=f"Run {output_dir.name}",
        config=config,
        checkpoint=best,
        epochs=metrics.get("epochs"),
        val_acc_best=metrics.get("val/acc_best"),
        wall_time_s=metrics.get("wall_time_s"),
        history_csv=_csv_logger_file(trainer),
    )
    if best:
        facts.epoch = torch.load(best, map_location="cpu", weights_only=True).get("epoch")
    path = write_report(output_dir, evaluation, facts)
    log.info("Report: %s", path)
    return path
