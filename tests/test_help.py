"""Every command's ``--help`` describes that command (its own name and usage), quickly, with exit 0."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import run_cli

# (how the command is started, a line its help must hold, the training command's own header)
COMMANDS = [
    (["--help"], "fmnist-lightning: train and compare Fashion-MNIST classifiers"),
    (["-m", "fmnist_lightning.evaluate", "--help"], "fmnist-evaluate: evaluate a checkpoint"),
    (["-m", "fmnist_lightning.predict", "--help"], "fmnist-predict:"),
    (["-m", "fmnist_lightning.export", "--help"], "fmnist-export:"),
    (["-m", "fmnist_lightning.demo", "--help"], "fmnist-demo: a web page"),
    (["-m", "fmnist_lightning.lr_find", "--help"], "fmnist-lr-find: the learning-rate range test"),
    (["-m", "fmnist_lightning.summarize", "--help"], "usage: python -m fmnist_lightning.summarize"),
    (["-m", "fmnist_lightning.augment", "--help"], "python -m fmnist_lightning.augment aug=<preset>"),
]
TRAINING_HEADER = "fmnist-lightning: train and compare"


@pytest.mark.parametrize(("args", "expected"), COMMANDS, ids=[c[0][1] if len(c[0]) > 1 else "train" for c in COMMANDS])
def test_help_describes_the_command(args: list[str], expected: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout
    if args[0] == "-m":
        assert TRAINING_HEADER not in result.stdout  # not the training command's help under another name


@pytest.mark.parametrize(
    "args",
    [["-m", "fmnist_lightning", *c[0]] if c[0][0] != "-m" else c[0] for c in COMMANDS],
    ids=[c[0][1] if len(c[0]) > 1 else "train" for c in COMMANDS],
)
def test_help_into_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    # `fmnist --help | head -2`: the reader is gone before the help is written; no traceback, no error line.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, *args], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    # Hydra's commands exit 1 (cli.exits); argparse (summarize) swallows its help's failed write and exits 0.
    assert result.returncode == (0 if "fmnist_lightning.summarize" in args else 1)
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--badflag"], "error: unrecognized arguments: --badflag; settings are key=value with no dashes"),
        (
            ["optim.lr=0.1,0.01", "-m", "trainer.max_epochs=1"],
            "error: unrecognized arguments: trainer.max_epochs=1; put the flags (-m, --cfg, ...) before the settings",
        ),
        (["--cfg", "wrong"], "error: argument --cfg/-c: invalid choice: 'wrong' (choose from 'job', 'hydra', 'all')"),
        (["-m", "fmnist_lightning.evaluate", "--tta"], "error: unrecognized arguments: --tta; settings are key=value"),
        (
            ["-m", "fmnist_lightning.summarize", "--metirc", "x"],
            "error: unrecognized arguments: --metirc; see python -m fmnist_lightning.summarize --help",
        ),
    ],
)
def test_a_mistyped_flag_is_one_error_line_and_exit_2(args: list[str], line: str) -> None:
    # argparse would print its usage lines first; Hydra's parser and ours say what was wrong in one line.
    result = run_cli(*args)
    assert result.returncode == 2 and result.stderr.strip().startswith(line), result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and not result.stdout
