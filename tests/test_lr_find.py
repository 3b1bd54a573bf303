"""The learning-rate range test on the composed config: its files, its printed override, its error lines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import cli_overrides, run_cli
from fmnist_lightning.errors import ConfigError, TrainingError
from fmnist_lightning.lr_find import find_lr

FAST = ["lr_find.num_training=30", "lr_find.min_lr=1e-4", "lr_find.max_lr=1"]
# SGD's own optim.lr (0.1) trains: a rise from 1e6 diverges only if the finder's rate reaches the optimizer.
DIVERGING = ["optim=sgd", "lr_find.min_lr=1e6", "lr_find.max_lr=1e9", "lr_find.num_training=20"]


def test_lr_find_writes_its_plot_and_json_with_a_suggestion_in_range(make_cfg, tmp_path: Path) -> None:
    # onecycle plans the whole run's length when it is built: the finder replaces it, but it must build.
    result = find_lr(make_cfg(*FAST, "optim=sgd", "sched=onecycle"))
    out = tmp_path / "run"
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((out / "lr_find.json").read_text())
    assert stored["suggestion"] == result["suggestion"] and 1e-4 <= stored["suggestion"] <= 1
    assert len(stored["lrs"]) == len(stored["losses"]) == stored["steps_run"] > 10
    assert stored["lrs"][0] == pytest.approx(1e-4) and stored["lrs"] == sorted(stored["lrs"])
    assert re.fullmatch(r"optim\.lr=\d\.\d\de[-+]\d\d", stored["override"])
    assert float(stored["override"].partition("=")[2]) == pytest.approx(stored["suggestion"], rel=5e-3)
    assert "optim=sgd" in stored["overrides"] and stored["optimizer"] == "torch.optim.SGD"
    assert not list(out.glob(".lr_find*"))  # the finder's temporary checkpoint is gone


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr_find.num_training=5", "take at least 20"),
        ("lr_find.min_lr=2", "need 0 < min_lr < max_lr"),
        ("lr_find.mode=cubic", "pick one of exponential, linear"),
        ("debug=fast_dev_run", "fast_dev_run skips the learning-rate range test"),
    ],
)
def test_settings_the_test_cannot_run_with_are_refused(make_cfg, tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        find_lr(make_cfg(override))
    assert not (tmp_path / "run" / "lr_find.json").exists()


def test_lr_find_cli_prints_an_override_to_paste(data_root: Path, tmp_path: Path) -> None:
    result = run_cli("-m", "fmnist_lightning.lr_find", *cli_overrides(data_root, tmp_path), *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.fullmatch(r"Suggested learning rate: optim\.lr=\d\.\d\de[-+]\d\d", result.stdout.strip().splitlines()[-1])
    (run,) = (tmp_path / "lr_find").iterdir()  # its own directory, beside runs/ and multirun/
    assert (run / "lr_find.json").is_file() and (run / "lr_find.png").is_file()


def test_a_loss_that_diverges_at_once_is_one_error_line(make_cfg, data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="the learning-rate range test found no suggestion: the"):
        find_lr(make_cfg(*DIVERGING))
    result = run_cli("-m", "fmnist_lightning.lr_find", *cli_overrides(data_root, tmp_path), *DIVERGING)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lower lr_find.min_lr" in errors[0], result.stderr[-2000:]
