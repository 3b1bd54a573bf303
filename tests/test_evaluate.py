"""A tiny real training run, its report and TensorBoard figures, then ``evaluate`` on its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict
from PIL import Image
from torchmetrics.functional.classification import multiclass_accuracy

from conftest import cli_overrides, run_cli
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.data.datamodule import normalize
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES, NUM_CLASSES
from fmnist_lightning.errors import CheckpointError, ConfigError, DataError
from fmnist_lightning.evaluate import evaluate
from fmnist_lightning.results import split_metrics
from fmnist_lightning.results.report import (
    CONFUSION_NORMALIZED_PNG,
    CONFUSION_PNG,
    CURVES_PNG,
    MISTAKES_PNG,
    PER_CLASS_PNG,
    REPORT_MD,
)
from fmnist_lightning.training import checkpoint_files

# Two epochs of a few batches; validation and test are not limited, so they cover the whole
# (tiny) validation split and test set, as an evaluation of the checkpoint does.
TINY = ["trainer.max_epochs=2", "trainer.limit_train_batches=4"]
FIGURES = (CURVES_PNG, CONFUSION_PNG, CONFUSION_NORMALIZED_PNG, PER_CLASS_PNG, MISTAKES_PNG)


@pytest.fixture(scope="session")
def trained_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = tmp_path_factory.mktemp("outputs")
    result = run_cli(*cli_overrides(data_root, log_dir, figures=True), *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()
    return run


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture
def eval_cfg(tmp_path: Path):
    """The real ``evaluate`` config composed as the CLI composes it, writing into a temporary directory."""

    def _make(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
            cfg = compose(config_name="evaluate", overrides=list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "evaluate")
        return cfg

    yield _make
    GlobalHydra.instance().clear()


def test_training_run_writes_figures_and_report(trained_run: Path) -> None:
    for name in FIGURES:
        with Image.open(trained_run / name) as image:
            assert image.format == "PNG" and min(image.size) > 0
    report = (trained_run / REPORT_MD).read_text()
    metrics = _metrics(trained_run)
    assert f"{metrics['test/acc']:.2%}" in report
    assert f"{metrics['params']:,}" in report
    assert "best epoch" in report and "wall time" in report and "Most-confused class pairs" in report
    # The per-class table has one row per class, named.
    for name in CLASS_NAMES:
        assert f"| {name} |" in report
    for name in FIGURES:
        assert f"({name})" in report


def test_tensorboard_has_result_figures(trained_run: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run / "tensorboard"))
    events.Reload()
    expected = {f"{stage}/{name}" for stage in ("val", "test") for name in ("confusion_matrix", "per_class_accuracy")}
    assert expected | {"test/predictions"} <= set(events.Tags()["images"])


def test_evaluate_command_reproduces_the_runs_test_metrics(trained_run: Path, data_root: Path, tmp_path: Path) -> None:
    trained = _metrics(trained_run)
    fmnist_evaluate = Path(sys.executable).parent / "fmnist-evaluate"
    result = subprocess.run(
        [
            str(fmnist_evaluate),
            f"ckpt_path={trained['best_model_path']}",
            f"data_root={data_root}",
            f"paths.log_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (out,) = (tmp_path / "evaluate").iterdir()
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-4)
    assert evaluated["test/f1_macro"] == pytest.approx(trained["test/f1_macro"], abs=1e-4)
    assert f"{trained['test/acc']:.2%}" in result.stdout
    assert "Confusion matrix" in result.stdout
    for name in CLASS_NAMES:
        assert name in result.stdout
    for name in (*FIGURES, REPORT_MD):
        assert (out / name).is_file(), name


def test_validation_split_is_the_runs_own(trained_run: Path, data_root: Path, eval_cfg) -> None:
    # Same seed and size from the checkpoint, so the same images: the best checkpoint's accuracy
    # on them is the run's best validation accuracy.
    trained = _metrics(trained_run)
    metrics = evaluate(eval_cfg(f"ckpt_path={trained['best_model_path']}", f"data_root={data_root}", "split=val"))
    assert metrics["val/acc"] == pytest.approx(trained["val/acc_best"], abs=1e-6)


def test_evaluate_with_precision_auto_picks_this_machines_autocast(
    trained_run: Path, data_root: Path, eval_cfg
) -> None:
    from fmnist_lightning.training.precision import fast_precision

    trained = _metrics(trained_run)
    metrics = evaluate(eval_cfg(f"ckpt_path={trained['best_model_path']}", f"data_root={data_root}", "precision=auto"))
    # bf16 autocast (where this CPU has it) moves a few logits; float32 must reproduce the run's own figure.
    tolerance = 0.02 if fast_precision("cpu") == "bf16-mixed" else 1e-6
    assert metrics["test/acc"] == pytest.approx(trained["test/acc"], abs=tolerance)
    assert metrics["precision"] == fast_precision("cpu")  # what auto resolved to here, as metrics.json records it


def _restored_split(run_dir: Path, data_root: Path, split: str):
    """The run's best checkpoint restored by hand: its path, module, datamodule, ``split`` and normalised images."""
    ckpt_path = _metrics(run_dir)["best_model_path"]
    checkpoint = checkpoint_files.load_checkpoint(ckpt_path)
    module = checkpoint_files.module_from_checkpoint(checkpoint)
    datamodule = checkpoint_files.datamodule_from_config(checkpoint_files.run_config(checkpoint), root=str(data_root))
    dataset = split_metrics.split_dataset(datamodule, split)
    return ckpt_path, module, datamodule, dataset, normalize(dataset.images, datamodule.mean, datamodule.std)


def test_tta_averages_each_image_with_its_mirror_image(trained_run: Path, data_root: Path, eval_cfg) -> None:
    ckpt_path, module, datamodule, test_set, x = _restored_split(trained_run, data_root, "test")
    with torch.no_grad():
        plain = module(x).softmax(-1)
        expected = (plain + module(x.flip(-1)).softmax(-1)) / 2
    assert not torch.allclose(plain, expected)

    module.tta = True
    result = split_metrics.evaluate_split(
        module, datamodule, "test", split_metrics.prediction_trainer(accelerator="cpu")
    )
    torch.testing.assert_close(result.probs, expected)

    expected_acc = float(multiclass_accuracy(expected, test_set.labels, num_classes=NUM_CLASSES, average="micro"))
    metrics = evaluate(eval_cfg(f"ckpt_path={ckpt_path}", f"data_root={data_root}", "tta=true"))
    assert metrics["tta"] is True
    assert metrics["test/acc"] == pytest.approx(expected_acc)
    # trainer.test honours the flag too.
    tester = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    (tested,) = tester.test(module, datamodule=datamodule, verbose=False)
    assert tested["test/acc"] == pytest.approx(expected_acc)


def test_tta_shift_averages_the_translated_views_on_the_validation_split(
    trained_run: Path, data_root: Path, eval_cfg
) -> None:
    from fmnist_lightning.training.tta import translate

    ckpt_path, module, _, val_set, x = _restored_split(trained_run, data_root, "val")
    with torch.no_grad():
        views = [
            view for image in (x, x.flip(-1)) for view in (image, translate(image, 1, 1), translate(image, -1, -1))
        ]
        expected = torch.stack([module(view).softmax(-1) for view in views]).mean(0)
    expected_acc = float(multiclass_accuracy(expected, val_set.labels, num_classes=NUM_CLASSES, average="micro"))
    metrics = evaluate(
        eval_cfg(f"ckpt_path={ckpt_path}", f"data_root={data_root}", "split=val", "tta=true", "tta_shift=1")
    )
    assert (metrics["split"], metrics["tta"], metrics["tta_shift"]) == ("val", True, 1)
    assert metrics["val/acc"] == pytest.approx(expected_acc)
    with pytest.raises(ConfigError, match="tta_shift=-1 is impossible: it must be a shift in pixels >= 0"):
        evaluate(eval_cfg(f"ckpt_path={ckpt_path}", "tta=true", "tta_shift=-1"))


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_cli(
        "-m", "fmnist_lightning.evaluate", f"ckpt_path={tmp_path / 'nope.ckpt'}", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: checkpoint not found: {tmp_path / 'nope.ckpt'}; pass the file of a run, e.g. ckpt_path=")
    )


@pytest.mark.parametrize(
    ("make_file", "error", "message"),
    [
        (lambda p: p.write_text("not a checkpoint"), CheckpointError, "not a readable checkpoint"),
        (lambda p: torch.save({"state_dict": {}}, p), CheckpointError, "has no fmnist_config"),
        (lambda p: p.mkdir(), CheckpointError, "is a directory"),
    ],
    ids=["text file", "no run config", "directory"],
)
def test_bad_checkpoints_raise_one_clear_error(eval_cfg, tmp_path: Path, make_file, error, message) -> None:
    path = tmp_path / "bad.ckpt"
    make_file(path)
    with pytest.raises(error, match=message):
        evaluate(eval_cfg(f"ckpt_path={path}"))


def test_evaluate_never_writes_into_the_run_it_evaluates(trained_run: Path) -> None:
    # Hydra would replace the run's .hydra files (what resume= reads), and evaluate its report.md and metrics.json.
    before = {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()}
    last = trained_run / "checkpoints" / "last.ckpt"
    result = run_cli("-m", "fmnist_lightning.evaluate", f"ckpt_path={last}", f"hydra.run.dir={trained_run}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {trained_run} already holds a run, and the evaluate command never writes into it: pick another "
        "hydra.run.dir (or leave it out: each run gets a directory of its own)"
    )
    assert {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()} == before


def test_usage_errors(eval_cfg, trained_run: Path, tmp_path: Path) -> None:
    last = trained_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="no checkpoint given"):
        evaluate(eval_cfg())
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate(eval_cfg(f"ckpt_path={last}", "split=train"))
    with pytest.raises(ConfigError, match="batch_size=0 is impossible: it must be a batch size >= 1"):
        evaluate(eval_cfg(f"ckpt_path={last}", "batch_size=0"))
    with pytest.raises(ConfigError, match=r"tta_shift='one' is str, not an integer: .* e\.g\. tta_shift=1"):
        evaluate(eval_cfg(f"ckpt_path={last}", "tta_shift=one"))
    with pytest.raises(DataError, match="data_root=<folder>"):
        evaluate(eval_cfg(f"ckpt_path={last}", f"data_root={tmp_path / 'no_data_here'}"))
