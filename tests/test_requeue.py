"""A job its scheduler starts again: which earlier attempt it continues, and the attempts run.json lists.

The whole path (SLURM requeues a running job, the job continues from last.ckpt) runs on a real
cluster in ``test_slurm.py``; these cover each decision on real directories, fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmnist_lightning.sweeps.slurm_queue import ENDED, QueueWatcher
from fmnist_lightning.training.requeue import attempts, continue_in_place, end_attempt
from fmnist_lightning.training.resume import prepare_argv


@pytest.fixture
def restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")


def test_a_first_start_trains_as_configured(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    cfg = make_cfg(output_dir=tmp_path / "run")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert continue_in_place(cfg) is None and cfg.get("ckpt_path") is None


def test_a_restart_of_a_finished_job_returns_its_metrics_without_training(
    make_cfg, tmp_path: Path, restarted: None
) -> None:
    run = tmp_path / "run"
    cfg = make_cfg(output_dir=run)
    run.mkdir(exist_ok=True)
    (run / "metrics.json").write_text(json.dumps({"test/acc": 0.5, "epochs": 3}))
    assert continue_in_place(cfg) == {"test/acc": 0.5, "epochs": 3}


def test_a_restart_before_the_first_checkpoint_sets_the_attempt_aside_and_starts_over(
    make_cfg, tmp_path: Path, restarted: None, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    cfg = make_cfg(output_dir=run)
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("this attempt's log\n")
    (run / "tensorboard").mkdir()
    (run / "run.json").write_text(json.dumps({"machine": {"hostname": "n1"}, "started": "t0", "ended": None}))
    assert continue_in_place(cfg) is None and cfg.get("ckpt_path") is None
    # This attempt's own files (Hydra's, its log) stay; the earlier attempt's are kept, not deleted.
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "attempts", "train.log"]
    assert sorted(p.name for p in (run / "attempts" / "1").iterdir()) == ["run.json", "tensorboard"]
    assert "starts over" in capsys.readouterr().err
    history = attempts(run, "t1", None)
    assert [(a["host"], a["started"], a.get("files")) for a in history[:-1]] == [("n1", "t0", "attempts/1")]
    assert history[-1]["slurm_job_id"] == "41" and history[-1]["slurm_restarts"] == 1


def test_attempts_of_a_run_continued_in_place_list_the_earlier_ones_and_this_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    earlier = {"started": "t0", "attempts": [{"host": "n1", "started": "t0", "ended": "t1", "stopped_by": "SIGTERM"}]}
    (run / "run.json").write_text(json.dumps(earlier))
    record = {"attempts": attempts(run, "t2", str(run / "checkpoints" / "last.ckpt"))}
    assert [a["started"] for a in record["attempts"]] == ["t0", "t2"]
    assert record["attempts"][-1]["resumed_from"].endswith("last.ckpt")
    end_attempt(record, stopped_by="SIGUSR2")
    assert record["attempts"][-1]["ended"] and record["attempts"][-1]["stopped_by"] == "SIGUSR2"
    # A run started anew from another run's checkpoint (fine-tuning) is a first attempt of its own.
    assert len(attempts(run, "t3", str(tmp_path / "elsewhere" / "last.ckpt"))) == 1


def test_the_same_command_started_again_by_slurm_continues_its_run_directory(tmp_path: Path, restarted: None) -> None:
    run = tmp_path / "job"
    # The first start of a job in a fixed directory: a new run there.
    assert prepare_argv(["model=linear", f"hydra.run.dir={run}"]) == ["model=linear", f"hydra.run.dir={run.resolve()}"]
    # Started again after Hydra wrote its files but before any checkpoint: the attempt is set aside, not refused.
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- model=linear\n")
    assert prepare_argv(["model=linear", f"hydra.run.dir={run}"])[-1] == f"hydra.run.dir={run.resolve()}"
    assert (run / "attempts" / "1" / ".hydra" / "overrides.yaml").is_file()


def test_squeue_answers_for_sacct_on_a_cluster_without_accounting() -> None:
    watcher = QueueWatcher()
    watcher.accounting = False
    for job_id in ("7", "8_0", "8_1", "9"):
        watcher.register_job(job_id)
    states = watcher.read_info("7|RUNNING|n1\n8_0|COMPLETED|n2\n8_1|PENDING|\n")
    assert states["7"]["State"] == "RUNNING" and states["8_0"]["State"] == "COMPLETED"
    assert states["8_1"]["State"] == "PENDING"
    # Not listed any more: it ended and the controller forgot it (MinJobAge), so submitit stops waiting.
    assert states["9"]["State"] == ENDED
    assert watcher._make_command() == ["squeue", "-h", "--states=all", "-o", "%i|%T|%N", "-j", "7,8,9"]
