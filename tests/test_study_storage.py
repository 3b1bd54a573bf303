"""Study storages by URL, heartbeats, the study-wide budget and the summary from a storage alone.

Real Optuna storages (sqlite and journal files) and the real CLI; the several-host runs on PostgreSQL and on a
shared journal are in test_study_hosts.py.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from conftest import cli_overrides, run_cli

optuna = pytest.importorskip("optuna", reason="needs the [sweeps] extra: pip install -e '.[sweeps]'")

from fmnist_lightning.config.masking import mask_text  # noqa: E402 - after the skip
from fmnist_lightning.models.registry import count_parameters, create_model  # noqa: E402 - after the skip
from fmnist_lightning.sweeps.study_budget import over_budget, recover, room  # noqa: E402 - after the skip
from fmnist_lightning.sweeps.study_storage import (  # noqa: E402 - after the skip
    HEARTBEAT_ATTR,
    Heartbeats,
    StorageError,
    journal_path,
    open_storage,
)

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql+psycopg://fm:s3cret-pw@127.0.0.1:1/optuna", "postgresql+psycopg://fm:***@127.0.0.1:1/optuna"),
        ("postgresq://fm:s3cret-pw@127.0.0.1:1/optuna", "postgresq://fm:***@127.0.0.1:1/optuna"),
    ],
)
def test_an_unreachable_or_misspelt_storage_is_one_error_line_without_its_password(
    data_root: Path, tmp_path: Path, url: str, shown: str
) -> None:
    result = run_cli(*cli_overrides(data_root, tmp_path), "hparams_search=lr_wd", f"hydra.sweeper.storage='{url}'")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot open the study storage {shown}: ")
    assert line.endswith(
        "; check the URL (sqlite:///<file>, journal:///<file> or a database's, e.g. "
        "postgresql+psycopg://<user>@<host>/<db>) and that its server is up and reachable from here"
    )
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert not (tmp_path / "multirun").exists() or not list((tmp_path / "multirun").glob("*/trial_*"))


def test_passwords_are_hidden_and_file_urls_follow_sqlite() -> None:
    assert mask_text("postgresql+psycopg://user:p4ss@db:5432/x") == "postgresql+psycopg://user:***@db:5432/x"
    assert mask_text("sqlite:///outputs/optuna.db") == "sqlite:///outputs/optuna.db"
    # A password may hold what a URL also uses as separators; SQLAlchemy reads it whole, and so is it hidden.
    assert mask_text("postgresql+psycopg://user:a/b:c@db/x") == "postgresql+psycopg://user:***@db/x"
    assert journal_path("journal:///outputs/study.journal") == Path("outputs/study.journal")
    assert journal_path("journal:////shared/study.journal") == Path("/shared/study.journal")
    with pytest.raises(StorageError, match="journal:////<absolute path>"):
        journal_path("journal://study.journal")


def test_reading_a_storage_that_is_not_there_creates_nothing(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path}/none.db", f"journal:///{tmp_path}/none.journal"):
        with pytest.raises(StorageError, match="does not exist"):
            open_storage(url, must_exist=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_trial_whose_heartbeat_stopped_is_failed_and_asked_again(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:///{tmp_path}/s.journal"
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
    # A grace of 3 s: sqlite stores whole seconds, and a loaded machine may stall a second between alive's beat
    # and the check.
    storage = open_storage(url, heartbeat_interval=1, grace_period=3, stale_callback=retry)
    study = optuna.create_study(study_name="s", storage=storage)
    dead, alive, silent = (study.ask(SPACE) for _ in range(3))
    storage.record_heartbeat(dead._trial_id)
    storage.record_heartbeat(alive._trial_id)
    time.sleep(4.2)  # dead's last beat is now older than the grace period
    storage.record_heartbeat(alive._trial_id)
    recover(study, retry)
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    assert states[dead.number] == optuna.trial.TrialState.FAIL
    # Alive beats; silent never beat (a trial asked by a tool without heartbeats): both are left alone.
    assert states[alive.number] == states[silent.number] == optuna.trial.TrialState.RUNNING
    (queued,) = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert queued.system_attrs["failed_trial"] == dead.number and queued.params == dead.params
    # The next ask gets the retry, with the dead trial's parameters.
    assert study.ask(SPACE).params == dead.params
    if kind == "journal":
        assert HEARTBEAT_ATTR in study.trials[alive.number].system_attrs


def test_workers_asking_at_once_never_overshoot_max_trials(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path}/s.db"))
    first = study.ask(SPACE)
    study.tell(first, 0.5)
    # Three workers saw one free place and asked together: only the lowest number runs.
    asked = [study.ask(SPACE) for _ in range(3)]
    assert [over_budget(study, t.number, max_trials=2) for t in asked] == [False, True, True]
    # A queued retry takes the place of the trial it retries, whatever its number; so does a trial failed
    # for silence whose retry is due but not yet queued (two writes, and a new trial must not slip between).
    study.tell(asked[0], state=optuna.trial.TrialState.FAIL)
    for t in asked[1:]:
        t.set_user_attr("not_run", "over the budget")
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    assert room(study, max_trials=2, max_retry=1).free == 0
    assert room(study, max_trials=2, max_retry=0).free == 1
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=first.params,
            distributions=SPACE,
            system_attrs={"failed_trial": asked[0].number},
        )
    )
    budget = room(study, max_trials=2)
    assert (budget.finished, budget.taken, budget.waiting, budget.free) == (1, 2, 1, 1)
    late = study.ask(SPACE)  # the retry, popped first
    assert not over_budget(study, late.number, max_trials=2, max_retry=1)
    assert over_budget(study, study.ask(SPACE).number, max_trials=2, max_retry=1)


@pytest.mark.slow
def test_max_trials_is_the_whole_studys_budget_across_invocations(data_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    args = [
        *cli_overrides(data_root, tmp_path),
        "model=linear",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.max_epochs=1",
        "hparams_search=lr_wd",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.n_trials=null",
        "hydra.sweeper.max_trials=2",
    ]
    for _ in range(2):  # the second invocation finds the budget spent and runs nothing
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="lr_wd", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert "holds 2 finished trials (max_trials=2): done" in result.stdout
    # Trial directories are named by the study's trial numbers, which no two workers share.
    assert sorted(p.name for p in tmp_path.glob("multirun/*/trial_*")) == ["trial_0", "trial_1"]

    out = tmp_path / "from_storage"
    summary = run_cli("-m", "fmnist_lightning.summarize", "--storage", f"sqlite:///{db}", "--out", str(out))
    assert summary.returncode == 0, summary.stderr
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["status"] for row in rows] == ["completed"] * 2
    linear = count_parameters(create_model("linear"))
    # The summary ranks rows best first, so each row is matched to its trial by the run's folder.
    by_folder = {f"trial_{trial.number}": trial for trial in trials}
    assert sorted(Path(row["run_dir"]).name for row in rows) == sorted(by_folder)
    for row in rows:
        trial = by_folder[Path(row["run_dir"]).name]
        assert row["host"] and row["cpu"]
        # The study's own value of each trial, and the run's own test result and model size.
        assert float(row["val/acc_best"]) == pytest.approx(trial.value)
        run_metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())
        assert float(row["test/acc"]) == pytest.approx(run_metrics["test/acc"]) and int(row["params"]) == linear
    assert "Study summary: lr_wd" in (out / "summary.md").read_text()

    missing = run_cli("-m", "fmnist_lightning.summarize", "--storage", f"sqlite:///{db}", "--study", "nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: no study named 'nope' in sqlite:///{db} (studies there: lr_wd); pass --study <name>"
    )


def test_a_study_whose_jobs_all_fail_stops_at_max_trials_failures(data_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "study.db"
    # Every job breaks the parameter budget and fails at once; without a limit the workers would ask forever.
    result = run_cli(
        *cli_overrides(data_root, tmp_path),
        "model=linear",
        "model.max_params=10",
        "hparams_search=lr_wd",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.n_trials=null",
        "hydra.sweeper.max_trials=2",
    )
    # A search none of whose trials completed ends as bad input, the first trial's reason on the line.
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every job of the sweep failed (2); the first, job trial_0: ")
    assert "max_params" in last
    trials = optuna.load_study(study_name="lr_wd", storage=f"sqlite:///{db}").trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] * 2
    assert all("max_params" in t.user_attrs["error"] for t in trials)
    assert "has 2 failed jobs" in result.stdout + result.stderr


def test_a_journal_lock_left_by_a_killed_worker_is_broken_before_live_trials_look_dead(tmp_path: Path) -> None:
    """A worker killed with kill -9 while it held the journal's lock leaves the lock file behind. Every heartbeat
    waits behind it until it is broken as stale: that must happen well within the heartbeat grace period, or
    the other workers fail trials that are alive (seen in CI: Optuna's 30 s against a 6 s grace period)."""
    url = f"journal:///{tmp_path / 'study.journal'}"
    storage = open_storage(url, heartbeat_interval=1, grace_period=6)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask(SPACE)
    lock = tmp_path / "study.journal.lock"
    lock.symlink_to(tmp_path / "study.journal")  # as the killed holder left it
    started = time.monotonic()
    Heartbeats(storage, [trial._trial_id], 1).beat()
    waited = time.monotonic() - started
    assert waited < 6 - 1, f"the heartbeat waited {waited:.1f} s behind the dead worker's lock"
    assert not lock.exists()


OPEN_AT = """
import sys, time
import optuna
from fmnist_lightning.sweeps.study_storage import open_storage
for n, url in enumerate(sys.argv[2:]):
    time.sleep(max(0.0, float(sys.argv[1]) + 2 * n - time.time()))
    optuna.create_study(study_name="race", storage=open_storage(url), load_if_exists=True)
"""


def test_workers_started_together_on_a_new_sqlite_file_all_open_it(tmp_path: Path) -> None:
    # Four workers create Optuna's tables in the same fresh file at the same instant, three times: the
    # losers of the race ("table studies already exists", alembic's version row twice) open it on a retry.
    import subprocess
    import sys

    urls = [f"sqlite:///{tmp_path / f'race{n}.db'}" for n in range(3)]
    start = str(time.time() + 5)  # past every worker's imports
    workers = [
        subprocess.Popen([sys.executable, "-c", OPEN_AT, start, *urls], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 4, "\n".join(errors)[-2000:]
    assert all(len(optuna.get_all_study_names(url)) == 1 for url in urls)
