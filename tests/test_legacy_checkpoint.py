"""A run written before the package was split into concern packages still loads, evaluates, predicts,
exports and resumes: its checkpoint stores the old ``_target_`` paths (tests/fixtures/README.md)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import N_TEST, run_cli
from fmnist_lightning.data.idx_files import load_split
from fmnist_lightning.training import checkpoint_files

LEGACY_RUN = Path(__file__).parent / "fixtures" / "legacy_run"
LEGACY_CKPT = LEGACY_RUN / "checkpoints" / "last.ckpt"


def _targets(node: object) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "_target_"] + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def test_the_fixture_holds_old_paths_and_they_map_to_todays() -> None:
    stored = torch.load(LEGACY_CKPT, map_location="cpu", weights_only=True)["fmnist_config"]
    old = [t for t in _targets(stored) if t.startswith("fmnist_lightning.")]
    assert "fmnist_lightning.module.ImageClassifier" in old and "fmnist_lightning.augment.RandomCrop" in old
    run = checkpoint_files.restore_run(LEGACY_CKPT)
    current = [t for t in _targets(run.config) if t.startswith("fmnist_lightning.")]
    assert len(current) == len(old)
    for target in current:  # every one imports from today's layout
        module, _, name = target.rpartition(".")
        assert hasattr(__import__(module, fromlist=[name]), name), target
    assert type(run.module).__module__ == "fmnist_lightning.training.classifier"
    assert run.config["choices"]["aug"] == "shift_flip"


def test_an_old_checkpoint_evaluates(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "evaluate"
    result = run_cli(
        "-m", "fmnist_lightning.evaluate", f"ckpt_path={LEGACY_CKPT}", f"data_root={data_root}", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == N_TEST and 0.0 <= metrics["test/acc"] <= 1.0
    assert (out / "report.md").is_file()


def test_an_old_checkpoint_predicts(data_root: Path, tmp_path: Path) -> None:
    images = load_split(data_root, "test")[0]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i, image in enumerate(images[:5]):
        Image.fromarray(image[0].numpy()).save(inputs / f"{i}.png")
    result = run_cli(
        "-m",
        "fmnist_lightning.predict",
        f"ckpt_path={LEGACY_CKPT}",
        f"inputs={inputs}",
        f"csv={tmp_path / 'predictions.csv'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [Path(r["file"]).name for r in rows] == [f"{i}.png" for i in range(5)]
    assert all(not r["error"] and 0.0 < float(r["prob_1"]) <= 1.0 for r in rows)


def test_an_old_checkpoint_exports_with_parity(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        "-m",
        "fmnist_lightning.export",
        f"ckpt_path={LEGACY_CKPT}",
        f"data_root={data_root}",
        f"out={tmp_path}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "export.json").read_text())
    assert summary["parity"]["ok"] is True and summary["parity"]["images"] == N_TEST
    assert summary["metadata"]["source_checkpoint"] == str(LEGACY_CKPT.resolve())


@pytest.mark.slow
def test_an_old_run_resumes_in_place(data_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "legacy_run"
    shutil.copytree(LEGACY_RUN, run)
    result = run_cli(
        f"resume={run}",
        "trainer.max_epochs=2",
        f"data.root={data_root}",
        "data.download=false",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    resumed = checkpoint_files.load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert (
        resumed["epoch"] == 1
        and resumed["global_step"] > torch.load(LEGACY_CKPT, map_location="cpu", weights_only=True)["global_step"]
    )
    # The resumed checkpoint stores today's paths.
    assert resumed["fmnist_config"]["module"]["_target_"] == "fmnist_lightning.training.classifier.ImageClassifier"


@pytest.mark.parametrize(
    ("stored", "today"),
    [
        (
            "fmnist_lightning.training.loggers.ResumableCSVLogger",
            "fmnist_lightning.training.csv_logger.ResumableCSVLogger",
        ),
        ("fmnist_lightning.loggers.ResumableCSVLogger", "fmnist_lightning.training.csv_logger.ResumableCSVLogger"),
        (
            "fmnist_lightning.training.callbacks.run_record.RunRecord",
            "fmnist_lightning.training.callbacks.config_in_checkpoints.RunRecord",
        ),
        (
            "fmnist_lightning.callbacks.InterruptCheckpoint",
            "fmnist_lightning.training.callbacks.interrupt_checkpoint.InterruptCheckpoint",
        ),
        ("torch.optim.AdamW", "torch.optim.AdamW"),
    ],
)
def test_a_target_stored_before_a_module_moved_is_found_where_it_lives_now(stored: str, today: str) -> None:
    from hydra.utils import get_object

    assert checkpoint_files.current_target(stored) == today
    get_object(today)
