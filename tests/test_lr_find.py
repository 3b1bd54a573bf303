"""The learning-rate range test on the composed config: its files, its printed override, its error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import cli_overrides, run_cli
from fmnist_lightning.errors import TrainingError
from fmnist_lightning.lr_find import find_lr

FAST = ["lr_find.num_training=30", "lr_find.min_lr=1e-4", "lr_find.max_lr=1"]


def test_lr_find_writes_its_plot_and_json_with_a_suggestion_in_range(make_cfg, tmp_path: Path) -> None:
    result = find_lr(make_cfg(*FAST, "optim=sgd"))
    out = tmp_path / "run"
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "lr_find.json").read_text())
    assert stored["suggestion"] == result["suggestion"] and 1e-4 <= stored["suggestion"] <= 1
    assert len(stored["lrs"]) == len(stored["losses"]) == stored["steps_run"] > 10
    assert stored["override"] == f"optim.lr={stored['suggestion']:.3g}" and stored["optimizer"] == "torch.optim.SGD"
    assert stored["lrs"] == sorted(stored["lrs"])  # the rate only rises
    assert not list(out.glob("*.ckpt")) and not list(out.glob(".lr_find*"))  # the finder's own checkpoint is gone


def test_lr_find_cli_prints_an_override_to_paste(data_root: Path, tmp_path: Path) -> None:
    result = run_cli("-m", "fmnist_lightning.lr_find", *cli_overrides(data_root, tmp_path), *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith("Suggested learning rate: optim.lr=")
    (run,) = (tmp_path / "lr_find").iterdir()  # its own directory, beside runs/ and multirun/
    assert (run / "lr_find.json").is_file() and (run / "lr_find.png").is_file()


def test_a_loss_that_diverges_at_once_is_one_error_line(make_cfg, data_root: Path, tmp_path: Path) -> None:
    diverging = ["lr_find.min_lr=1e6", "lr_find.max_lr=1e9", "lr_find.num_training=20", "optim=sgd"]
    with pytest.raises(TrainingError, match="the learning-rate range test found no suggestion"):
        find_lr(make_cfg(*diverging))
    result = run_cli("-m", "fmnist_lightning.lr_find", *cli_overrides(data_root, tmp_path), *diverging)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: the learning-rate range test found no suggestion")
