"""Learning-rate schedules as the Trainer runs them, read back from the run's own CSV log."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
import torch

from fmnist_lightning.errors import ConfigError
from fmnist_lightning.train import train


def _logged_lrs(run_dir: Path) -> list[tuple[int, float]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(int(r["step"]), float(r["lr"])) for r in rows if r["lr"]]


def test_onecycle_plans_the_run_from_the_trainer(make_cfg, tmp_path: Path) -> None:
    # 2 epochs x 10 batches: total_steps must come out as 20 although no config states it.
    run_dir = tmp_path / "run"
    cfg = make_cfg(
        "sched=onecycle",
        "debug=limit_batches",
        "logger=csv",
        "optim.lr=0.02",
        "trainer.log_every_n_steps=1",
        output_dir=run_dir,
    )
    train(cfg)
    lrs = _logged_lrs(run_dir)
    steps = [s for s, _ in lrs]
    values = [v for _, v in lrs]
    assert steps == list(range(20)), "the schedule is stepped, and logged, every batch"
    peak = values.index(max(values))
    assert peak == 4, "OneCycleLR ends its warm-up at step pct_start * total_steps - 1 = 0.25 * 20 - 1"
    assert max(values) == pytest.approx(0.02, rel=1e-3)
    assert values[0] == pytest.approx(0.02 / 25, rel=1e-3)
    assert values[-1] < values[0] / 100, "annealed far below the starting rate by the last step"
    assert all(a < b for a, b in itertools.pairwise(values[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(values[peak:]))


def test_onecycle_refuses_an_unbounded_run(make_cfg) -> None:
    cfg = make_cfg("sched=onecycle", "trainer.max_epochs=-1", "trainer.max_steps=-1", "logger=none")
    with pytest.raises(ConfigError, match=r"finite run.*trainer\.max_epochs or trainer\.max_steps"):
        train(cfg)


def test_onecycle_refuses_a_warm_up_of_exactly_one_step(make_cfg, tmp_path: Path) -> None:
    # 0.25 of 4 steps: torch's OneCycleLR would end its warm-up at step 0 and divide by zero on the first step.
    words = ["sched=onecycle", "trainer.max_epochs=1", "trainer.limit_train_batches=4", "logger=none", "test=false"]
    cfg = make_cfg(*words)
    with pytest.raises(ConfigError) as refused:
        train(cfg)
    assert str(refused.value) == (
        "sched.scheduler.pct_start=0.25 of the schedule's 4 optimizer steps is a warm-up of exactly one step, which "
        "torch's OneCycleLR cannot plan (it divides by zero): use sched.scheduler.pct_start=0.5 (two steps)"
    )
    # A schedule of its own length (sched.scheduler.total_steps) is checked the same way.
    planned = make_cfg(*words, "sched.scheduler.total_steps=8", "sched.scheduler.pct_start=0.125")
    with pytest.raises(ConfigError, match=r"pct_start=0\.125 of the schedule's 8 optimizer steps"):
        train(planned)
    # The fix it names trains.
    fixed = make_cfg(*words, "sched.scheduler.pct_start=0.5", output_dir=tmp_path / "fixed")
    assert train(fixed)["global_step"] == 4


def test_onecycle_refuses_a_warm_up_over_the_whole_run(make_cfg, tmp_path: Path) -> None:
    # pct_start=1.0 leaves OneCycleLR's anneal phase empty: torch divides by zero at the run's last step, after all
    # the training, so it is refused before the run.
    words = ["sched=onecycle", "trainer.max_epochs=1", "trainer.limit_train_batches=8", "logger=none", "test=false"]
    with pytest.raises(ConfigError) as refused:
        train(make_cfg(*words, "sched.scheduler.pct_start=1.0"))
    assert str(refused.value) == (
        "sched.scheduler.pct_start=1.0 makes the whole schedule a warm-up, with no anneal after it, which torch's "
        "OneCycleLR cannot plan (it divides by zero at the run's last step): use a pct_start under 1, e.g. "
        "sched.scheduler.pct_start=0.3, or sched=none for a constant lr"
    )
    # Torch itself, on the same plan: the crash the refusal saves the run from.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    plan = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=8, pct_start=1.0)
    with pytest.raises(ZeroDivisionError):
        for _ in range(8):
            opt.step()
            plan.step()
    # The fix it names trains to the end.
    fixed = make_cfg(*words, "sched.scheduler.pct_start=0.3", output_dir=tmp_path / "fixed")
    assert train(fixed)["global_step"] == 8


def test_onecycle_refuses_a_per_epoch_interval(make_cfg) -> None:
    cfg = make_cfg("sched=onecycle", "sched.interval=epoch", "debug=fast_dev_run")
    with pytest.raises(ConfigError, match=r"sched\.interval=step"):
        train(cfg)


def test_an_explicit_total_steps_is_kept(make_cfg, tmp_path: Path) -> None:
    # A 40-step plan over a 20-step run peaks at step 9 and is still mid-anneal at the end.
    run_dir = tmp_path / "run"
    cfg = make_cfg(
        "sched=onecycle",
        "sched.scheduler.total_steps=40",
        "debug=limit_batches",
        "logger=csv",
        "optim.lr=0.02",
        "trainer.log_every_n_steps=1",
        output_dir=run_dir,
    )
    train(cfg)
    values = [v for _, v in _logged_lrs(run_dir)]
    assert values.index(max(values)) == 9
    assert values[-1] > 0.02 / 2


def test_the_learning_rate_is_logged_as_lr_whatever_the_optimizer(make_cfg, tmp_path: Path) -> None:
    # SGD without a scheduler and AdamW with one: Lightning alone would log lr-SGD and lr-AdamW.
    for optim, sched in (("sgd", "none"), ("adamw", "cosine")):
        run_dir = tmp_path / optim
        train(make_cfg(f"optim={optim}", f"sched={sched}", "debug=limit_batches", "logger=csv", output_dir=run_dir))
        with open(run_dir / "csv" / "metrics.csv", newline="") as f:
            header = next(csv.reader(f))
        assert "lr" in header and not [h for h in header if h.startswith("lr-")], header
        rates = [v for _, v in _logged_lrs(run_dir)]
        peak = make_cfg(f"optim={optim}").optim.lr
        if sched == "none":
            assert rates and all(v == pytest.approx(peak) for v in rates), rates  # the optimizer's own rate, throughout
        else:
            assert rates[0] == pytest.approx(peak) and rates[-1] < peak, rates  # the cosine starts at it and falls


def test_a_jobs_own_overrides_come_first_in_its_hparams(make_cfg) -> None:
    from fmnist_lightning.config.run_record import hparams_from_record, job_hparam_names, run_record

    cfg = make_cfg("optim.lr=0.02", "model=lenet", "data.batch_size=16")
    record = run_record(cfg)
    names = list(hparams_from_record(record))
    # Every override that names a hyperparameter, in the order given (the tests' base overrides, data.val_size,
    # data.batch_size, ..., are overrides of this job too), before any hyperparameter the job did not set.
    expected = [name for name in job_hparam_names(record) if name in names]
    assert {"optim/lr", "choice/model", "data/batch_size"} <= set(expected)
    assert names[: len(expected)] == expected
    assert names.index("optim/lr") < names.index("choice/aug")  # a choice nobody overrode comes later


def test_tensorboard_lists_a_jobs_own_overrides_first(make_cfg, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run_dir = tmp_path / "run"
    train(
        make_cfg(
            "optim.lr=0.02",
            "debug=limit_batches",
            "trainer.max_epochs=1",
            "logger=tensorboard",
            "test=false",
            output_dir=run_dir,
        )
    )
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    infos = HParamsPluginData.FromString(content).experiment.hparam_infos
    # TensorBoard orders its HPARAMS columns by this flag first, then by name, not in the order logged.
    flagged = {info.name for info in infos if info.differs}
    assert {"optim/lr", "choice/debug", "data/batch_size"} <= flagged
    assert not flagged & {"choice/aug", "choice/model", "model/hidden_units", "optim/weight_decay"}
