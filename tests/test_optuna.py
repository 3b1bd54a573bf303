"""hydra/sweeper=optuna on current Optuna: pruning, parallel trials, an interrupted study, the dashboard's API.

Real Optuna, real sqlite storage, the real CLI on tiny budgets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import cli_overrides, run_cli
from fmnist_lightning.results.sweep_results import find_jobs

optuna = pytest.importorskip("optuna", reason="needs the [sweeps] extra: pip install -e '.[sweeps]'")

TINY = ["model=linear", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
# A pruner that prunes every trial at its first report: makes pruning deterministic whatever the sampler draws.
ALWAYS_PRUNE = [
    "hydra/sweeper/pruner=none",
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.lower=1.01",
]


def search(data_root: Path, log_dir: Path, *args: str, sweep: Path | None = None) -> Path:
    result = run_cli(
        *cli_overrides(data_root, log_dir),
        *TINY,
        "hparams_search=lr_wd",
        *([f"hydra.sweep.dir={sweep}"] if sweep else []),
        *args,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (found,) = (log_dir / "multirun").iterdir()
    return found


def trials(sweep: Path) -> list:
    return optuna.load_study(study_name="lr_wd", storage=f"sqlite:///{sweep / 'optuna.db'}").trials


def test_a_pruned_trial_stops_cleanly_keeps_its_results_and_is_listed(data_root: Path, tmp_path: Path) -> None:
    sweep = search(data_root, tmp_path, "trainer.max_epochs=3", "hydra.sweeper.n_trials=1", *ALWAYS_PRUNE)
    (trial,) = trials(sweep)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values.keys() == {1}  # reported after epoch 1, then stopped
    (job,) = find_jobs(sweep)
    metrics = json.loads((sweep / job.name / "metrics.json").read_text())
    assert metrics["pruned_at_epoch"] == 1 and metrics["epochs"] == 1 and "test/acc" in metrics
    assert list((sweep / job.name / "checkpoints").glob("*.ckpt"))
    assert job.status == "pruned"
    # The sweep's config beside its trials, as Hydra's own sweeper leaves one: the study's search and sampler.
    config = OmegaConf.load(sweep / "multirun.yaml")
    assert config.hydra.sweeper.study_name == "lr_wd" and "optim.lr" in config.hydra.sweeper.params
    assert "hparams_search=lr_wd" in config.hydra.overrides.task
    summary = (sweep / "summary.md").read_text()
    assert "1 pruned" in summary and "| pruned |" in summary
    with (sweep / "summary.csv").open() as fh:
        header, row = fh.readline().strip().split(","), fh.readline().strip().split(",")
    assert row[header.index("status")] == "pruned" and row[header.index("pruned_at_epoch")] == "1"


@pytest.mark.slow
def test_two_trials_run_in_parallel_through_joblib_and_each_reaches_its_trial(data_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = search(
        data_root,
        tmp_path,
        "trainer.max_epochs=2",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *ALWAYS_PRUNE,
    )
    found = trials(sweep)
    # Both were asked for before either ran, and each job (in its own worker process) reported to its own trial.
    assert len(found) == 2 and all(t.state == optuna.trial.TrialState.PRUNED for t in found)
    assert all(t.intermediate_values.keys() == {1} for t in found)
    assert len({job.name for job in find_jobs(sweep)}) == 2


@pytest.mark.slow
def test_a_search_of_a_validation_metric_without_a_validation_split_is_refused_before_any_trial(
    data_root: Path, tmp_path: Path
) -> None:
    # experiment=speedrun trains on every image (data.val_size=0): each trial would train, then fail for want of
    # val/acc_best.
    result = run_cli(
        "--multirun", *cli_overrides(data_root, tmp_path), *TINY, "hparams_search=lr_wd", "data.val_size=0"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "error: the search optimizes val/acc_best, which a run with data.val_size=0 never measures: add "
        "data.val_size=5000 (a search picks settings on the validation split, never on the test set)"
    ]
    assert not list(tmp_path.rglob("trial_*")) and not list(tmp_path.rglob("*.ckpt"))


def test_an_interrupted_study_resumes(data_root: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "outputs"
    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning",
        *cli_overrides(data_root, log_dir),
        *TINY,
        "hparams_search=lr_wd",
        "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=200",
        "hydra/sweeper/pruner=none",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    # Killed while the first trial trains (it has written a checkpoint): the sweep never tells its trial.
    while not list(log_dir.glob("multirun/*/*/checkpoints/last.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (sweep,) = (log_dir / "multirun").iterdir()
    assert [t.state for t in trials(sweep)] == [optuna.trial.TrialState.RUNNING]

    # Resumed on the same host, the sweep sees the dead sweep's trial at once (its process is gone) and, with
    # retry_failed=1, asks its parameters again before any new ones.
    search(
        data_root,
        log_dir,
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "hydra/sweeper/pruner=none",
        "hydra.sweeper.retry_failed=1",
        sweep=sweep,
    )
    killed, retried, new = trials(sweep)
    assert [t.state for t in (killed, retried, new)] == [optuna.trial.TrialState.FAIL] + [
        optuna.trial.TrialState.COMPLETE
    ] * 2
    assert retried.system_attrs["failed_trial"] == killed.number and retried.params == killed.params
    assert "failed_trial" not in new.system_attrs


def test_old_sweeper_keys_get_a_clear_error(data_root: Path, tmp_path: Path) -> None:
    result = run_cli(
        *cli_overrides(data_root, tmp_path),
        *TINY,
        "hparams_search=lr_wd",
        "+hydra.sweeper.search_space={optim.lr: {type: float}}",
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "hydra.sweeper.search_space is not supported by this Optuna sweeper" in result.stderr


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        (
            "hydra.sweeper.n_trials=2.5",
            "error: hydra.sweeper.n_trials=2.5 is float, not an integer: it must be a number of trials >= 1 (or null, "
            "with max_trials), e.g. hydra.sweeper.n_trials=20",
        ),
        (
            "hydra.sweeper.direction=sideways",
            "error: hydra.sweeper.direction=sideways is impossible: it must be maximize or minimize, e.g. "
            "hydra.sweeper.direction=maximize",
        ),
    ],
)
def test_a_sweeper_setting_it_cannot_take_stops_the_search_before_its_first_trial(
    data_root: Path, tmp_path: Path, setting: str, line: str
) -> None:
    # Before, 2.5 ran two trials and then failed (exit 1); sideways failed inside Optuna and left an optuna.db.
    sweep = tmp_path / "sweep"
    result = run_cli(
        *cli_overrides(data_root, tmp_path), *TINY, "hparams_search=lr_wd", f"hydra.sweep.dir={sweep}", setting
    )
    assert result.returncode == 2 and result.stderr.strip() == line, result.stderr[-2000:]
    assert not list(sweep.rglob("optuna.db")) and not list(sweep.glob("trial_*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_dashboard_serves_the_study(data_root: Path, tmp_path: Path) -> None:
    sweep = search(data_root, tmp_path, "trainer.max_epochs=1", "hydra.sweeper.n_trials=2", "hydra/sweeper/pruner=none")
    port = _free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    server = subprocess.Popen(
        [str(dashboard), f"sqlite:///{sweep / 'optuna.db'}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, studies = time.monotonic() + 60, None
        while studies is None:
            assert server.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not come up"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    studies = json.load(response)["study_summaries"]
            except OSError:
                time.sleep(0.2)
        (study,) = [s for s in studies if s["study_name"] == "lr_wd"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=5) as response:
            detail = json.load(response)
        assert len(detail["trials"]) == 2 and all(t["state"] == "Complete" for t in detail["trials"])
        # What each trial's job stored: the same facts as summarize --storage reads.
        for trial in detail["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            assert attrs["host"] == socket.gethostname() and Path(attrs["run_dir"]).name == f"trial_{trial['number']}"
            assert {"val/acc_best", "test/acc", "params", "status"} <= attrs.keys()
    finally:
        server.terminate()
        server.wait(timeout=30)
