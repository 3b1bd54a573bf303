"""Resume never loses a result: finished runs are left alone, longer schedules are re-planned,
an interrupt at any step resumes exactly, and an unreadable last.ckpt falls back to an older one."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from conftest import cli_overrides, compose_cfg, run_cli
from fmnist_lightning.train import train

# 500 training images in batches of 32: 16 batches an epoch, so 4 batches stop mid-epoch.
FINISHED = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "optim=sgd",
    "sched=onecycle",
    "seed=5",
]


def _digests(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="session")
def finished_run(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-cycle run trained to its end through the CLI (session-scoped: tests copy it before changing it)."""
    log_dir = tmp_path_factory.mktemp("finished")
    result = run_cli(*cli_overrides(data_root, log_dir), *FINISHED)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    # A copy resumes like the original: resume= points Hydra's run dir (and so every output) at it.
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_resume_of_a_finished_run_leaves_every_file_as_it_is(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    before = _digests(run)
    result = run_cli(f"resume={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{run} is complete (2 epochs, test/acc" in result.stdout
    assert "trainer.max_epochs=<more than 2>" in result.stdout
    assert _digests(run) == before
    # Asking for the same length again is no more training either.
    again = run_cli(f"resume={run}", "trainer.max_epochs=2")
    assert again.returncode == 0 and "is complete" in again.stdout
    assert _digests(run) == before


RESTORED_STATE = "continues the optimizer and schedule it was saved with (Lightning restores their state), so "


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ("module.label_smoothing=1.5", "module.label_smoothing=1.5 is impossible"),
        # Values the checkpoint's optimizer and scheduler state would overrule, and state of another kind.
        ("optim.lr=0.5", RESTORED_STATE + "optim.lr=0.5 (the run's: 0.1), sched.scheduler.max_lr=0.5 (the run's: 0.1)"),
        # Another option is refused before composing (the run's own optim.* words may not fit it).
        (
            "optim=adamw",
            "optim=adamw would not take effect: a resumed run continues the optimizer and schedule its "
            "checkpoint holds (optim=sgd; Lightning restores their state); drop optim=adamw to continue it",
        ),
        (
            "sched=cosine",
            "sched=cosine would not take effect: a resumed run continues the optimizer and schedule its "
            "checkpoint holds (sched=onecycle; ",
        ),
        ("module.param_groups.norm_bias_lr_scale=4", RESTORED_STATE + "module.param_groups.norm_bias_lr_scale=4"),
    ],
)
def test_a_resume_refused_before_it_runs_leaves_the_runs_files_as_they_are(
    finished_run: Path, tmp_path: Path, change: str, said: str
) -> None:
    # A sweep's summary reads status.json: a complete run must not turn "failed" because a resume of it was refused.
    run = _copy(finished_run, tmp_path)
    before, log = _digests(run), (run / "train.log").read_bytes()
    result = run_cli(f"resume={run}", "trainer.max_epochs=4", change)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and said in line, line
    after = _digests(run)
    # The run's log is appended to (the refusal is part of its history); every other file is as it was.
    assert {name: after.get(name) for name in before if name != "train.log"} == {
        name: digest for name, digest in before.items() if name != "train.log"
    }
    assert (run / "train.log").read_bytes().startswith(log)
    assert all(name.startswith(".hydra/resumed_") for name in set(after) - set(before)), set(after) - set(before)


def test_resume_with_more_epochs_replans_onecycle_and_rewrites_full_results(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    first = json.loads((run / "metrics.json").read_text())
    result = run_cli(f"resume={run}", "trainer.max_epochs=4", "trainer.log_every_n_steps=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Tried to step" not in result.stderr
    log = (run / "train.log").read_text()
    assert "OneCycleLR is re-planned with total_steps=16 (was 8) and continues from its step 8" in log
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and metrics["global_step"] == 16
    # Everything a fresh run writes, and the wall time of both invocations.
    for key in ("val/acc_best", "val/acc", "val/loss", "train/loss", "train/acc", "test/acc", "params"):
        assert key in metrics, key
    assert metrics["wall_time_s"] > first["wall_time_s"]
    # The learning rate follows the new plan: it rises again after the resume (a 16-step cycle at step 8
    # is still near its peak), where the old 8-step plan had annealed to almost nothing.
    rows = [line.split(",") for line in (run / "csv" / "metrics.csv").read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    # Both invocations' rows are kept: the CSV log of the first is not replaced by the second's.
    assert [int(r[header.index("epoch")]) for r in rows if r[header.index("train/loss")]] == [0, 1, 2, 3]
    lr_col, step_col = header.index("lr"), header.index("step")
    lrs = {int(r[step_col]): float(r[lr_col]) for r in rows if r[lr_col]}
    assert min(lrs) >= 8 and max(lrs.values()) > 0.5 * 0.1  # optim.lr of optim=sgd is the peak


def test_explicit_onecycle_length_shorter_than_the_run_is_refused(make_cfg) -> None:
    from fmnist_lightning.errors import ConfigError

    cfg = make_cfg(
        "trainer.max_epochs=2", "trainer.limit_train_batches=4", "sched=onecycle", "sched.scheduler.total_steps=5"
    )
    with pytest.raises(ConfigError, match=r"total_steps=5 is shorter than this run's 8 optimizer steps"):
        train(cfg)


def test_unreadable_last_checkpoint_falls_back_to_the_newest_readable_one(finished_run: Path, tmp_path: Path) -> None:
    run = _copy(finished_run, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    (best,) = list((run / "checkpoints").glob("epoch_*.ckpt"))
    last.write_bytes(last.read_bytes()[:1000])  # truncated, as by a full disk or a half-finished copy
    result = run_cli(f"resume={run}", "trainer.max_epochs=3")
    assert result.returncode == 0, result.stderr[-3000:]
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning and f"{last} cannot be read" in warning[0] and f"resuming from {best}" in warning[0]
    assert sum(f"{last} cannot be read" in line for line in result.stderr.splitlines()) == 1  # said once
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 3


class SigtermAt(L.Callback):
    """Sends this process a real SIGTERM after training step ``step``: Lightning's own handler takes it."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


# 3 epochs of 6 batches; aug=light draws random flips and rotations from torch's generator.
EXACT = [
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=6",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.deterministic=true",
    "aug=light",
    "seed=11",
    "trainer.enable_model_summary=false",
]
COMPARED = ("test/acc", "test/loss", "val/acc", "val/loss", "val/acc_best", "train/loss", "train/acc")


@pytest.fixture(scope="session")
def uninterrupted(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    from hydra.core.global_hydra import GlobalHydra

    cfg = compose_cfg(data_root, tmp_path_factory.mktemp("uninterrupted"), *EXACT)
    GlobalHydra.instance().clear()
    return train(cfg)


# Step 3: mid-epoch 1; step 6: after epoch 1's last batch, before epoch 2's first; step 10: mid-epoch 2.
@pytest.mark.parametrize("step", [3, 6, 10])
def test_sigterm_at_any_step_then_resume_ends_exactly_like_an_uninterrupted_run(
    step: int, make_cfg, uninterrupted: dict[str, float], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    with pytest.raises(SIGTERMException):
        train(make_cfg(*EXACT, f"+callbacks.sigterm._target_={__name__}.SigtermAt", f"+callbacks.sigterm.step={step}"))
    last = run / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == step
    assert not (run / "metrics.json").exists()
    resumed = train(make_cfg(*EXACT, f"ckpt_path={last}"))
    assert resumed["global_step"] == 18
    assert {k: resumed[k] for k in COMPARED} == {k: uninterrupted[k] for k in COMPARED}


def test_time_to_accuracy_is_in_metrics_json_and_the_logs(make_cfg, tmp_path: Path) -> None:
    started = time.perf_counter()
    metrics = train(
        make_cfg(
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "callbacks.run_clock.thresholds=[0.0,0.0033,1.01]",
        )
    )
    # The run's own time: testing the best checkpoint restores callback states, and must not add its time again.
    assert metrics["wall_time_s"] <= time.perf_counter() - started
    assert metrics["epoch_to_acc/0.00"] == 1
    assert 0 < metrics["time_to_acc/0.00"] < metrics["wall_time_s"]
    # A preset's own figure (e.g. bncnn's 0.9203) keeps its digits instead of merging with 0.92's key.
    assert metrics["time_to_acc/0.0033"] == metrics["time_to_acc/0.00"] and metrics["epoch_to_acc/0.0033"] == 1
    assert "time_to_acc/1.01" not in metrics and "epoch_to_acc/1.01" not in metrics  # never reached
    assert (
        json.loads((tmp_path / "run" / "metrics.json").read_text())["time_to_acc/0.00"] == metrics["time_to_acc/0.00"]
    )
    header = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "time_to_acc/0.00" in header and "epoch_to_acc/0.00" in header
    assert not (tmp_path / "run" / "report.md").exists()  # report=false (the tests' default) skips it


def test_resume_whose_model_no_longer_fits_names_the_model_to_add(data_root: Path, tmp_path: Path) -> None:
    """resume= composes the run from today's conf/: when that gives another network than the run trained (a preset
    moved on, or another model= on the line), the refusal names the model the run was trained with, to add after
    resume=, and the run's files stay as they were."""
    log_dir = tmp_path / "logs"
    # FINISHED's words at one epoch, under a cosine schedule (a one-cycle warm-up of 0.25 x 4 steps is refused).
    short = [w if w != "sched=onecycle" else "sched=cosine" for w in FINISHED[1:]]
    first = run_cli(*cli_overrides(data_root, log_dir), *short, "model=linear", "trainer.max_epochs=1")
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()
    before = _digests(run)

    resumed = run_cli(f"resume={run}", "model=tinyvgg", "trainer.max_epochs=2")

    assert resumed.returncode != 0 and "Traceback" not in resumed.stderr
    (line,) = [line for line in resumed.stderr.splitlines() if line.startswith("error:")]
    assert "holds a linear model whose weights do not fit this run's model=tinyvgg" in line
    assert "a run resumes with the network it was trained with: drop a model= or experiment= change" in line
    assert "add model=linear and the other options it was trained with after resume=<run dir>" in line
    # Refused before the run's header, as any bad input is: the error line alone.
    assert "Model:" not in resumed.stdout + resumed.stderr, resumed.stdout + resumed.stderr
    # Every result and checkpoint as it was; only the log and run.json's record of attempts gain the refused one.
    after = _digests(run)
    kept = {name for name in before if name not in ("train.log", "run.json")}
    assert {name: after.get(name) for name in kept} == {name: before[name] for name in kept}
    assert any(name.startswith("checkpoints/") for name in kept) and "metrics.json" in kept
    assert "status.json" not in after  # the finished run is not marked failed by a refused resume of it


def test_resume_carries_the_hydra_overrides_the_run_needs_again(tmp_path: Path) -> None:
    """From .hydra/hydra.yaml: the search path, chdir, verbosity and logging choices; never the run's directory,
    output folder or mode, which the resume sets itself."""
    from fmnist_lightning.training.resume import carried_hydra_overrides

    (tmp_path / ".hydra").mkdir()
    words = [
        "hydra.run.dir=outputs/runs/x",
        "hydra.mode=RUN",
        "hydra.output_subdir=.hydra",
        "hydra.searchpath=[file:///home/me/my_conf]",
        "hydra/job_logging=disabled",
        "hydra.job.chdir=true",
        "hydra.job.name=mine",
        "hydra.sweeper.n_trials=3",
    ]
    (tmp_path / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  overrides:\n    hydra:\n" + "".join(f"    - {w}\n" for w in words) + "    task: []\n"
    )
    assert carried_hydra_overrides(tmp_path) == [
        "hydra.searchpath=[file:///home/me/my_conf]",
        "hydra/job_logging=disabled",
        "hydra.job.chdir=true",
    ]
    # A run directory without Hydra's file (a run stopped while Hydra wrote it) carries nothing.
    assert carried_hydra_overrides(tmp_path / "elsewhere") == []


@pytest.mark.parametrize(
    ("text", "expect", "problem"),
    [
        (
            "- optim=sgd\n- [seed=5\n",
            list,
            # The problem's wording is the YAML parser's own (libyaml's and PyYAML's differ); its line is ours.
            r"is not valid YAML \(line 3: [^)]*',' or '\]'[^)]*\)",
        ),
        ("optim=sgd", list, "does not hold a list, as Hydra writes it"),  # OmegaConf reads a bare word as a mapping
        ("", list, "does not hold a list, as Hydra writes it"),
        ("- hydra\n", dict, "does not hold a mapping, as Hydra writes it"),
        ("hydra: {run: ok\n", dict, r"is not valid YAML \(line 2: [^)]*',' or '\}'[^)]*\)"),
    ],
)
def test_a_run_file_cut_short_or_edited_is_refused_naming_it(
    text: str, expect: type, problem: str, tmp_path: Path
) -> None:
    from fmnist_lightning.config.files import read_run_yaml
    from fmnist_lightning.errors import ConfigError

    path = tmp_path / "overrides.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))} {problem}; do this$"):
        read_run_yaml(path, expect, "do this")
    path.write_bytes(b"\xff\xfe- a\n")
    unreadable = rf"^{re.escape(str(path))} is not readable YAML \(UnicodeDecodeError\); do this$"
    with pytest.raises(ConfigError, match=unreadable):
        read_run_yaml(path, expect, "do this")


@pytest.mark.parametrize("damaged", ["overrides.yaml", "hydra.yaml"])
def test_resume_of_a_run_whose_hydra_file_is_damaged_names_it_and_changes_nothing(
    damaged: str, finished_run: Path, tmp_path: Path
) -> None:
    run = _copy(finished_run, tmp_path)
    path = run / ".hydra" / damaged
    path.write_text(path.read_text()[: len(path.read_text()) // 2] + "\n- [")  # cut short mid-file
    before = _digests(run)
    result = run_cli(f"resume={run}", "trainer.max_epochs=3")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: {path} is not valid YAML (line ")
    assert "restore the run's .hydra/ from a backup, or start a new run" in line
    assert _digests(run) == before


def test_resume_of_a_run_of_a_preset_of_ones_own_finds_it_again(data_root: Path, tmp_path: Path) -> None:
    """A run that found its preset through hydra.searchpath resumes with the bare resume=<run dir>."""
    own = tmp_path / "my_conf"
    (own / "experiment").mkdir(parents=True)
    (own / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: linear\n  - override /sched: cosine\n"
    )
    log_dir = tmp_path / "logs"
    short = [w for w in FINISHED[1:] if w != "sched=onecycle"]
    first = run_cli(
        *cli_overrides(data_root, log_dir),
        *short,
        f"hydra.searchpath=[file://{own}]",
        "experiment=mine",
        "trainer.max_epochs=1",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = (log_dir / "runs").iterdir()

    resumed = run_cli(f"resume={run}", "trainer.max_epochs=2")

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["global_step"] == 8
    # The resume composed the user's preset again: its model, and the search path in Hydra's file of the resume.
    (resumed_files,) = (run / ".hydra").glob("resumed_*")
    assert OmegaConf.load(resumed_files / "config.yaml").model.name == "linear"
    assert f"hydra.searchpath=[file://{own}]" in OmegaConf.load(resumed_files / "hydra.yaml").hydra.overrides.hydra
