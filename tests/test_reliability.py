"""Crash safety, resume, bad input and untrusted checkpoints, through the real CLI and the real Trainer."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import cli_overrides, compose_cfg, run_cli
from fmnist_lightning.errors import CheckpointError, ConfigError, TrainingError
from fmnist_lightning.train import train
from fmnist_lightning.training.resume import RunComplete, prepare_argv, resume_overrides

# Whole epochs of the 500-image training split (16 batches), so a kill lands inside an epoch.
RUN = [
    "trainer.max_epochs=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.deterministic=true",
    "seed=7",
]
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONFAULTHANDLER": "1"}
    # A shell starts background jobs with SIGINT ignored, and Python then installs no Ctrl-C handler:
    # restore the default so the child sees Ctrl-C however the test suite itself was started.
    return subprocess.Popen(
        [sys.executable, "-m", "fmnist_lightning", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before {path.name} appeared: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def _wait_for_run(log_dir: Path, proc: subprocess.Popen, timeout: float = 180) -> Path:
    """The run's directory once it exists: ``runs/`` itself appears a moment before the directory inside it."""
    runs = log_dir / "runs"
    deadline = time.monotonic() + timeout
    while not (found := [p for p in runs.iterdir() if p.is_dir()] if runs.is_dir() else []):
        assert proc.poll() is None, f"the run ended before its directory appeared: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no run directory appeared in {runs}"
        time.sleep(0.02)
    return found[0]


def _only_run(log_dir: Path) -> Path:
    (run,) = [p for p in (log_dir / "runs").iterdir() if p.is_dir()]
    return run


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_ends_like_an_uninterrupted_run(data_root: Path, tmp_path: Path) -> None:
    # The uninterrupted reference runs in-process: the same composition and code path, without a CLI start.
    expected = train(compose_cfg(data_root, tmp_path / "ref", *RUN))

    log_dir = tmp_path / "killed"
    proc = _start(*cli_overrides(data_root, log_dir), *RUN)
    _wait_for(_wait_for_run(log_dir, proc) / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    run = _only_run(log_dir)
    assert not (run / "metrics.json").exists(), "the kill came after the run had finished"
    # Whatever moment the kill hit, last.ckpt is a complete checkpoint (written by an atomic rename).
    killed_at = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    original_config = _digest(run / ".hydra" / "config.yaml")

    resumed = run_cli(f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _only_run(log_dir) == run  # continued in place, no second run directory
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == expected["epochs"] == 3
    assert abs(metrics["test/acc"] - expected["test/acc"]) <= 0.003
    # Batch order, augmentation draws and dropout are restored, and the CPU path is deterministic: identical.
    assert metrics["test/acc"] == expected["test/acc"] and metrics["test/loss"] == expected["test/loss"]
    assert _digest(run / ".hydra" / "config.yaml") == original_config
    assert list((run / ".hydra").glob("resumed_*/overrides.yaml"))
    # One TensorBoard run: the resumed events land beside the first ones.
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) >= 2
    csv_epochs = {line.split(",")[0] for line in (run / "csv" / "metrics.csv").read_text().splitlines()[1:]}
    assert str(killed_at) in csv_epochs or killed_at == 0


def _first(pattern: str, folder: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Wait until a file matching ``pattern`` exists under ``folder``: the event a kill is timed on."""
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert proc.poll() is None, f"the run ended before {pattern} appeared: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"no {pattern} in {folder}"
        time.sleep(0.005)


@pytest.mark.slow
def test_resume_auto_makes_one_command_safe_to_run_again_after_a_kill_at_any_point(
    data_root: Path, tmp_path: Path
) -> None:
    """kill -9 before, during and after the first checkpoint; the identical command (resume=auto, a fixed run
    directory), run again as a scheduler's requeue would, ends each run complete, with the test metrics of an
    uninterrupted run to the bit (the CPU path is deterministic)."""
    expected = train(compose_cfg(data_root, tmp_path / "ref", *RUN))
    # Hydra has written the run's files; the first checkpoint file appears; last.ckpt is complete.
    kill_points = {"before": ".hydra/overrides.yaml", "during": "checkpoints/*", "after": "checkpoints/last.ckpt"}
    for point, pattern in kill_points.items():
        run = tmp_path / point
        command = [*cli_overrides(data_root, tmp_path / "logs"), *RUN, f"hydra.run.dir={run}", "resume=auto"]
        proc = _start(*command)
        _first(pattern, run, proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert not (run / "metrics.json").exists(), f"{point}: the kill came after the run had finished"

        again = run_cli(*command)
        assert again.returncode == 0, f"{point}: {again.stderr[-3000:]}"
        metrics = json.loads((run / "metrics.json").read_text())
        assert (metrics["epochs"], metrics["test/acc"], metrics["test/loss"]) == (
            expected["epochs"],
            expected["test/acc"],
            expected["test/loss"],
        ), point
        if point == "before":
            # Nothing to continue from: started over in place, the partial attempt kept, not deleted.
            assert "stopped before its first checkpoint" in again.stderr
            assert (run / "attempts" / "1" / ".hydra" / "overrides.yaml").is_file()
            assert (run / ".hydra" / "overrides.yaml").is_file()
        if point == "after":
            assert list((run / ".hydra").glob("resumed_*/overrides.yaml"))  # continued, not started over
            assert not (run / "attempts").exists()
            # A third time: the run is complete, and is left as it is.
            before = _digest(run / "metrics.json")
            third = run_cli(*command)
            assert third.returncode == 0 and "is complete" in third.stdout, third.stderr[-2000:]
            assert _digest(run / "metrics.json") == before


def test_resume_of_a_run_without_a_checkpoint_starts_it_over_in_place_and_keeps_each_attempt(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for attempt in (1, 2):
        (run / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(["model=lenet", "trainer.max_epochs=3"]), run / ".hydra" / "overrides.yaml")
        (run / "train.log").write_text(f"attempt {attempt}\n")
        assert resume_overrides(run, ["trainer.max_epochs=5"]) == [
            "model=lenet",
            "trainer.max_epochs=5",
            f"hydra.run.dir={run.resolve()}",
        ]
        assert sorted(p.name for p in run.iterdir()) == ["attempts"]  # the directory is free for the new start
        assert (run / "attempts" / str(attempt) / "train.log").read_text() == f"attempt {attempt}\n"
        assert (run / "attempts" / str(attempt) / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["optim=adamw"], "optim=adamw would not take effect: a resumed run continues the optimizer and schedule its "),
        (["sched=cosine"], "sched=cosine would not take effect: "),
        (["ema=none"], "ema=none would train on from the average its checkpoint holds as the network's weights"),
    ],
)
def test_resume_refuses_an_option_its_checkpoint_cannot_continue(tmp_path: Path, words: list[str], said: str) -> None:
    # The run's options as Hydra records them in .hydra/hydra.yaml; a checkpoint is there, so it would be continued.
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- optim=sgd\n")
    choices = {"optim": "sgd", "sched": "onecycle", "ema": "default"}
    OmegaConf.save(
        {"hydra": {"runtime": {"choices": choices}, "overrides": {"hydra": []}}}, run / ".hydra" / "hydra.yaml"
    )
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(ConfigError) as refused:
        resume_overrides(run, words)
    assert str(refused.value).startswith(f"resume={run}: {said}"), str(refused.value)
    # The run's own options, and the ones that keep its optimizer, schedule and average, go on to the checkpoint.
    for same in (["optim=sgd"], ["sched=onecycle"], ["ema=default"], ["trainer.max_epochs=9"]):
        with pytest.raises(ConfigError, match="no readable checkpoint"):  # the empty file is read: past the options
            resume_overrides(run, same)


def test_resume_of_a_folder_that_is_not_there_or_not_a_run_says_which(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^resume=.*nowhere: no such directory; pass the directory of an earlier"):
        prepare_argv([f"resume={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r": no \.hydra/overrides\.yaml there; pass the directory of an earlier run$"):
        prepare_argv([f"resume={tmp_path}"])


def test_resume_with_a_hydra_flag_prints_the_resumed_config_and_moves_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["model=lenet", "trainer.max_epochs=3"]), run / ".hydra" / "overrides.yaml")
    (run / "train.log").write_text("attempt 1\n")
    # The run's words join the user's overrides, the flags go after them: Hydra's argparse takes one run of words.
    for flags in (["--cfg", "job"], ["--cfg=job"], ["-c", "job"], ["--cf", "job"], ["-cjob"]):
        assert prepare_argv([f"resume={run}", *flags, "trainer.max_epochs=5"]) == [
            "model=lenet",
            "trainer.max_epochs=5",
            f"hydra.run.dir={run.resolve()}",
            *flags,
        ]
    # resume= continues one run: a sweep flag is refused however it is spelt (argparse takes a long prefix).
    for sweep in ("-m", "--multirun", "--multi"):
        with pytest.raises(ConfigError, match="resume= continues one run; drop -m/--multirun"):
            prepare_argv([f"resume={run}", sweep])
    # A finished run's config prints too, where a real resume would say it is complete.
    (run / "metrics.json").write_text("{}")
    assert prepare_argv([f"resume={run}", "--info", "config"])[-2:] == ["--info", "config"]
    with pytest.raises(RunComplete):
        resume_overrides(run)
    (run / "metrics.json").unlink()
    result = run_cli(f"resume={run}", "--cfg", "job", "trainer.max_epochs=5")
    assert result.returncode == 0, result.stderr[-2000:]
    job = OmegaConf.create(result.stdout)
    assert job.trainer.max_epochs == 5 and job.model.name == "lenet"
    # Printing the config set nothing aside: the partial run is where it was.
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "train.log"]


def test_resume_auto_starts_over_a_run_killed_while_hydra_wrote_its_files(tmp_path: Path) -> None:
    # A kill -9 between Hydra creating .hydra/overrides.yaml and writing it leaves the file empty; with no
    # checkpoint there is nothing to continue, so the same command starts the run over, its files set aside.
    run = tmp_path / "job"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("")
    args = prepare_argv(["model=linear", f"hydra.run.dir={run}", "resume=auto"])
    assert args == ["model=linear", f"hydra.run.dir={run.resolve()}"]
    assert not (run / ".hydra").exists()
    (kept,) = list(run.rglob("overrides.yaml"))
    assert kept.read_text() == ""


def test_resume_auto_needs_a_fixed_run_directory(tmp_path: Path) -> None:
    result = run_cli("resume=auto", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: resume=auto needs the run's own directory, the same each time the command runs: add "
        "hydra.run.dir=<dir>, e.g. hydra.run.dir=outputs/runs/job-$SLURM_JOB_ID"
    )


def _exit_or_stacks(proc: subprocess.Popen, guard: float = 600) -> str:
    """The stderr of ``proc`` once it exits. The guard only turns a hang into a failure that shows where every
    thread of the child stood (PYTHONFAULTHANDLER, then SIGABRT); a slow machine waits as long as it needs."""
    try:
        return proc.communicate(timeout=guard)[1]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        pytest.fail(f"the run hung after the signal; its threads:\n{proc.communicate()[1][-6000:]}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_sigterm_and_ctrl_c_save_a_checkpoint_and_say_how_to_resume(sig: int, data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    proc = _start(*cli_overrides(data_root, log_dir), *RUN, "trainer.max_epochs=200")
    last = _wait_for_run(log_dir, proc) / "checkpoints" / "last.ckpt"
    # The event the signal needs: training under way with a first checkpoint written, not a time.
    _wait_for(last, proc)
    saved = last.stat().st_mtime_ns
    proc.send_signal(sig)
    stderr = _exit_or_stacks(proc)
    # The shell's convention: 128 + the signal (Lightning alone would exit 0 after SIGTERM, 1 after Ctrl-C).
    assert proc.returncode == 128 + sig, stderr[-3000:]
    if sig == signal.SIGINT:
        # Ctrl-C stops after the current batch, as SIGTERM does, not wherever the main thread happens to be.
        assert "Ctrl-C: stopping after this batch (press Ctrl-C again to stop at once)" in stderr
    assert f"Resume with: python -m fmnist_lightning resume={_only_run(log_dir)}" in stderr
    assert last.stat().st_mtime_ns > saved  # written at the interrupt, not only at the last epoch end
    assert torch.load(last, weights_only=True)["fmnist_config"]["model"]["name"] == "tinyvgg"


def test_a_new_run_never_writes_into_an_existing_run(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    first = run_cli(*cli_overrides(data_root, log_dir), *TINY)
    assert first.returncode == 0, first.stderr[-3000:]
    run = _only_run(log_dir)
    before = {p: _digest(p) for p in run.rglob("*") if p.is_file()}
    second = run_cli(*cli_overrides(data_root, log_dir), *TINY, f"hydra.run.dir={run}")
    assert second.returncode == 2
    assert second.stderr.strip().splitlines()[-1].startswith(f"error: {run} already holds a run")
    assert {p: _digest(p) for p in run.rglob("*") if p.is_file()} == before


def test_resume_of_a_directory_without_a_run_is_refused(tmp_path: Path) -> None:
    result = run_cli(f"resume={tmp_path}")
    assert result.returncode == 2 and "no .hydra/overrides.yaml" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=0", "optim.lr=0 is impossible: it must be a learning rate > 0"),
        ("optim.lr=-0.1", "optim.lr=-0.1 is impossible"),
        ("optim.lr=fast", "optim.lr='fast' is str, not a number"),
        ("data.batch_size=0", "data.batch_size=0 is impossible: it must be a batch size >= 1"),
        ("data.batch_size=1.5", "data.batch_size=1.5 is float, not an integer"),
        ("trainer.max_epochs=-3", "trainer.max_epochs=-3 is impossible"),
        ("data.val_size=600", "data.val_size=600 leaves no training images out of 600"),
        ("data.val_size=1.0", "data.val_size=1.0 is impossible"),
        ("trainer.precision=banana", "cannot build trainer from the config"),
        ("module.tta_shift=-1", "module.tta_shift=-1 is impossible: it must be a shift in pixels >= 0"),
        ("module.tta_shift=0.5", "module.tta_shift=0.5 is float, not an integer"),
        ("seed=-1", "seed=-1 is impossible: it must be a seed in 0..4294967295 (or null), e.g. seed=42"),
        ("test=maybe", "test='maybe' is str, not a boolean: it must be true or false, e.g. test=false"),
        ("module.tta=1", "module.tta=1 is int, not a boolean"),
    ],
)
def test_impossible_config_values_stop_before_training(override: str, message: str, make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*TINY, override)
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_value_on_the_cli_is_one_error_line(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(*cli_overrides(data_root, tmp_path / "outputs"), "optim.lr=-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: optim.lr=-1 is impossible: it must be a learning rate > 0, e.g. optim.lr=0.001"
    )
    assert "Traceback" not in result.stderr


def test_unknown_group_option_lists_the_valid_ones(tmp_path: Path) -> None:
    result = run_cli("model=tinyvg", f"paths.log_dir={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()  # the options on the error line itself
    assert line.startswith("error: In 'config': Could not find 'model/tinyvg'; the options of model are ")
    assert (
        all(name in line for name in ("tinyvgg", "lenet", "bncnn", "resnet")) and "did you mean model=tinyvgg?" in line
    )


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        (
            "defaults:\n  - override /ema: on\n",
            "error: the config could not be composed: Unsupported item value in "
            "defaults : bool. Supported: string or list (YAML reads on, off",
        ),
        ("trainer: {max_epochs: 3\n", "error: the config could not be composed: while parsing a flow mapping"),
    ],
    ids=["yaml-bool-in-defaults", "yaml-syntax"],
)
def test_broken_config_file_is_one_error_line(experiment: str, message: str, tmp_path: Path) -> None:
    # A user's own config file that Hydra cannot compose: Hydra alone would print its internal traceback.
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "mine.yaml").write_text("# @package _global_\n" + experiment)
    result = run_cli("--config-dir", str(tmp_path / "conf"), "experiment=mine", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(message)
    assert not (tmp_path / "runs").exists()


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    result = run_cli("trainer.max_epoch=3", f"paths.log_dir={tmp_path}")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: Could not override 'trainer.max_epoch'. Key 'max_epoch' is not in struct")
    # Ours, or OmegaConf 2.4's own suggestion ("Did you mean one of: 'max_epochs', ...").
    assert "did you mean trainer.max_epochs?" in line or "Did you mean one of: 'max_epochs'" in line


def _train_checkpoint(make_cfg, tmp_path: Path, *overrides: str) -> Path:
    cfg = make_cfg(*TINY, *overrides, output_dir=tmp_path / "trained")
    train(cfg)
    return tmp_path / "trained" / "checkpoints" / "last.ckpt"


def test_checkpoint_of_another_backbone_is_refused(make_cfg, tmp_path: Path) -> None:
    checkpoint = _train_checkpoint(make_cfg, tmp_path, "model=linear")
    cfg = make_cfg(*TINY, "model=tinyvgg", f"ckpt_path={checkpoint}")
    with pytest.raises(
        CheckpointError, match=r"holds a linear model whose weights do not fit this run's model=tinyvgg"
    ):
        train(cfg)


def test_checkpoint_of_another_shape_is_refused(make_cfg, tmp_path: Path) -> None:
    checkpoint = _train_checkpoint(make_cfg, tmp_path, "model=tinyvgg")
    cfg = make_cfg(*TINY, "model=tinyvgg", "model.hidden_units=16", f"ckpt_path={checkpoint}")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        train(cfg)


def test_a_file_that_is_not_a_checkpoint_is_refused(make_cfg, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint"):
        train(make_cfg(*TINY, f"ckpt_path={bogus}"))


class _Payload:
    """Unpickling this runs ``open(marker, "w")``: what a booby-trapped checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(data_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    malicious = tmp_path / "malicious.ckpt"
    torch.save({"state_dict": {}, "fmnist_config": {}, "payload": _Payload(marker)}, malicious)
    assert not marker.exists()
    result = run_cli(*cli_overrides(data_root, tmp_path / "outputs"), *TINY, f"ckpt_path={malicious}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: refusing to load {malicious}")
    assert not marker.exists()


def test_a_loss_that_turns_nan_stops_the_run_and_suggests_a_lower_lr(make_cfg) -> None:
    cfg = make_cfg(
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "optim=sgd",
        "optim.lr=1e30",
        "callbacks.finite_loss_guard.check_every_n_steps=1",
    )
    with pytest.raises(
        TrainingError, match=r"the training loss became (nan|inf).*try a lower learning rate, e.g. optim.lr="
    ):
        train(cfg)


def test_same_config_and_seed_give_identical_metrics(make_cfg, tmp_path: Path) -> None:
    overrides = (
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.deterministic=true",
        "aug=strong",
        "seed=3",
    )
    first = train(make_cfg(*overrides, output_dir=tmp_path / "a"))
    second = train(make_cfg(*overrides, output_dir=tmp_path / "b"))
    keys = ("test/acc", "test/loss", "val/loss", "val/acc", "train/loss")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}


def test_last_checkpoint_every_n_train_steps(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=7",
        "trainer.limit_val_batches=0",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "test=false",
    )
    train(cfg)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] in (6, 7)  # step 3, then 6, then the end of the epoch


def test_an_unexpected_failure_is_one_error_line_with_the_traceback_kept(tmp_path: Path, capsys) -> None:
    from fmnist_lightning.cli.exits import exit_with_failure

    try:
        torch.zeros(2, 3) @ torch.zeros(2, 3)  # a real error from inside torch
    except RuntimeError as exc:
        with pytest.raises(SystemExit) as exited:
            exit_with_failure(exc, tmp_path)
    assert exited.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: RuntimeError: mat1 and mat2 shapes cannot be multiplied")
    assert line.endswith(f"(this is a failure, not bad input; traceback in {tmp_path / 'error.log'})")
    assert "Traceback (most recent call last)" in (tmp_path / "error.log").read_text()


CONSOLE_AND_FILE = """
import logging, logging.config, sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.config.masking import mask_every_handler
with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
    cfg = compose("config", return_hydra_config=True, overrides=sys.argv[2:])
with open_dict(cfg):
    cfg.hydra.runtime.output_dir, cfg.hydra.job.name = sys.argv[1], "train"
logging.config.dictConfig(OmegaConf.to_container(cfg.hydra.job_logging, resolve=True))
mask_every_handler()  # as the project's Hydra callback does when a job starts
try:
    raise RuntimeError("boom inside a library")
except RuntimeError:
    logging.getLogger("some.library").warning("retrying after an error", exc_info=True)
logging.getLogger("fmnist_lightning").info("connecting to http://u:pw-log@db:5000")
"""


def _log_through(tmp_path: Path, *overrides: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", CONSOLE_AND_FILE, str(tmp_path), *overrides], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_a_logged_traceback_goes_to_the_log_file_and_the_console_gets_one_line(tmp_path: Path) -> None:
    # The commands' real logging config (conf/hydra/job_logging/fmnist.yaml): a library's warning with its exception,
    # or a sweep job's failure, is one console line that says where its traceback is.
    lines = _log_through(tmp_path)
    assert len(lines) == 2 and not any("Traceback" in line for line in lines)
    assert lines[0].endswith(f"[some.library][WARNING] - retrying after an error (traceback in {tmp_path}/train.log)")
    assert lines[1].endswith("connecting to http://u:***@db:5000")
    log = (tmp_path / "train.log").read_text()
    assert "retrying after an error\nTraceback (most recent call last)" in log
    assert "RuntimeError: boom inside a library\n" in log and "pw-log" not in log


@pytest.mark.parametrize("option", ["stdout", "disabled", "none"])
def test_hydras_own_logging_options_replace_the_projects_and_still_mask(option: str, tmp_path: Path) -> None:
    # hydra/job_logging=<option> replaces the project's option whole (it once merged into it: a handler without a
    # class, and logging refused to start); the secret filter is put on whatever handlers the option has.
    lines = _log_through(tmp_path, f"hydra/job_logging={option}")
    assert not (tmp_path / "train.log").exists() and not any("pw-log" in line for line in lines)
    if option == "stdout":
        assert lines[-1].endswith("connecting to http://u:***@db:5000")
