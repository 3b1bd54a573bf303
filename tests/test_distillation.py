"""Knowledge distillation (``distill.teacher=<ckpt>``, training/distillation.py): the loss, the teacher's view of
the batch, and a student trained, checkpointed and restored without its teacher."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from fmnist_lightning.errors import CheckpointError, ConfigError, FmnistError
from fmnist_lightning.training.distillation import Distillation

SHORT = ("trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "report=false")


def test_the_loss_equals_a_hand_computation() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    hard = torch.tensor(2.3)
    t, w = 3.0, 0.7
    # KL(p_t || p_s) of the softened distributions, summed over classes, averaged over the batch, times t^2.
    p_t = torch.exp(teacher / t) / torch.exp(teacher / t).sum(1, keepdim=True)
    p_s = torch.exp(student / t) / torch.exp(student / t).sum(1, keepdim=True)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    expected = (1 - w) * hard + w * t * t * kl
    assert Distillation(temperature=t, weight=w).loss(student, hard, teacher) == pytest.approx(float(expected))


def test_without_a_teacher_the_loss_is_the_labels_own() -> None:
    distill = Distillation()
    hard = torch.tensor(1.25)
    assert not distill.enabled and distill(torch.randn(4, 10), hard, torch.rand(4, 1, 28, 28)) is hard


@pytest.mark.parametrize(("kwargs", "message"), [({"weight": 1.5}, "distill.weight"), ({"temperature": 0}, "> 0")])
def test_impossible_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Distillation(**kwargs)


def test_a_missing_teacher_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as error:
        Distillation(teacher=str(tmp_path / "teacher.ckpt"))
    assert "teacher.ckpt" in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def teacher(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compact network trained a few batches, with data.normalize=half (the student uses dataset's)."""
    from conftest import compose_cfg
    from fmnist_lightning.train import train

    run = tmp_path_factory.mktemp("teacher")
    train(compose_cfg(data_root, run, "model=compact", "data.normalize=half", "test=false", *SHORT))
    return run / "checkpoints" / "last.ckpt"


def test_the_teacher_sees_the_batch_in_its_own_normalisation(teacher: Path) -> None:
    from fmnist_lightning.training.checkpoint_files import restore_run

    distill = Distillation(teacher=str(teacher), normalize="dataset")
    images = torch.rand(6, 1, 28, 28)
    student_view = (images - 0.2860) / 0.3530
    net = restore_run(teacher).module.net
    with torch.no_grad():
        expected = net((images - 0.5) / 0.5)
    assert torch.allclose(distill.teacher_logits(student_view), expected, atol=1e-5)


def test_a_student_trains_and_is_restored_without_its_teacher(
    teacher: Path, make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from fmnist_lightning.train import train
    from fmnist_lightning.training.checkpoint_files import restore_run

    copy = tmp_path / "teacher.ckpt"
    copy.write_bytes(teacher.read_bytes())
    metrics = train(make_cfg(f"distill.teacher={copy}", "distill.weight=0.9", "model=linear", *SHORT))
    assert 0 <= metrics["test/acc"] <= 1 and torch.isfinite(torch.tensor(metrics["train/loss"]))
    student = tmp_path / "run" / "checkpoints" / "last.ckpt"
    weights = torch.load(student, weights_only=True)["state_dict"]
    assert all(k.startswith(("net.", "train_", "val_", "test_")) for k in weights)  # no teacher inside
    copy.unlink()  # evaluate, predict and export need the student alone
    assert restore_run(student).module.distill is None


def test_online_distillation_runs_the_teacher_on_each_training_batch_as_the_student_sees_it(
    teacher: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    from fmnist_lightning.training.run_setup import assemble, fit

    cfg = make_cfg(f"distill.teacher={teacher}", "model=linear", "test=false", *SHORT)
    run = assemble(cfg, time.perf_counter())
    distill = run.module.distill
    assert isinstance(distill, Distillation) and distill.teacher is not None and not distill.offline
    taught: list[int] = []
    distill.teacher.register_forward_hook(lambda _, args, __: taught.append(len(args[0])))
    trained: list[int] = []
    run.module.register_forward_pre_hook(lambda module, args: trained.append(len(args[0])) if module.training else None)
    fit(run, None)
    # One teacher forward per training batch, on a batch of the same size, and none in validation.
    assert run.trainer.global_step == 3 and taught == trained, (taught, trained)


def test_a_bad_teacher_value_stops_the_run_before_training(make_cfg: Callable[..., DictConfig]) -> None:
    from fmnist_lightning.train import train

    with pytest.raises(FmnistError, match=r"distill\.weight"):
        train(make_cfg("distill.teacher=/nonexistent.ckpt", "distill.weight=2", *SHORT))


def test_offline_targets_are_the_teachers_logits_for_each_image_and_its_mirror(teacher: Path) -> None:
    from fmnist_lightning.training.checkpoint_files import restore_run

    images = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)
    targets = Distillation(teacher=str(teacher), offline=True).soft_targets(images, batch_size=2)
    net = restore_run(teacher).module.net
    x = (images.float() / 255 - 0.5) / 0.5  # the teacher's own normalisation (data.normalize=half)
    with torch.no_grad():
        expected = (net(x) + net(x.flip(-1))) / 2
    assert targets.shape == (5, 10) and torch.allclose(targets, expected, atol=1e-5)


def test_a_batch_that_brings_its_teacher_logits_never_runs_the_teacher(teacher: Path) -> None:
    distill = Distillation(teacher=str(teacher), temperature=2.0, weight=0.4, offline=True)
    assert distill.teacher is not None
    calls = []
    distill.teacher.register_forward_hook(lambda *_: calls.append(1))
    student, brought, hard = torch.randn(4, 10), torch.randn(4, 10), torch.tensor(0.9)
    loss = distill(student, hard, torch.rand(4, 1, 28, 28), brought)
    assert loss == distill.loss(student, hard, brought) and not calls
    with pytest.raises(RuntimeError, match="without its teacher logits"):
        distill(student, hard, torch.rand(4, 1, 28, 28))  # offline, yet nothing brought: never a silent teacher


def test_offline_distillation_runs_the_teacher_once_before_training(
    teacher: Path, make_cfg: Callable[..., DictConfig]
) -> None:
    from fmnist_lightning.training.run_setup import assemble, fit

    cfg = make_cfg(f"distill.teacher={teacher}", "distill.offline=true", "model=linear", "test=false", *SHORT)
    run = assemble(cfg, time.perf_counter())
    distill = run.module.distill
    assert isinstance(distill, Distillation) and distill.teacher is not None
    calls = []
    distill.teacher.register_forward_hook(lambda *_: calls.append(1))
    seen: list[int] = []
    run.module.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    fit(run, None)
    train_set = run.datamodule.train_set
    assert train_set is not None and train_set.targets is not None
    n = len(train_set)
    # Two views (the image and its mirror image) per chunk of 1,024 images, and not one call per training step.
    assert len(calls) == 2 * -(-n // 1024) and seen
    assert torch.allclose(train_set.targets, distill.soft_targets(train_set.images), atol=1e-4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distill.offline=true"], "there is no teacher"),
        (["distill.offline=true", "distill.teacher=/any/teacher.ckpt", "mix=mixup"], "use mix=none"),
    ],
)
def test_offline_settings_that_cannot_work_stop_the_run_before_anything_is_built(
    overrides: list[str], message: str, make_cfg: Callable[..., DictConfig]
) -> None:
    from fmnist_lightning.train import train

    with pytest.raises(ConfigError, match=message) as error:
        train(make_cfg(*overrides, *SHORT))
    assert "\n" not in str(error.value)


def test_the_weight_average_shares_the_students_frozen_teacher(teacher: Path) -> None:
    from functools import partial

    from torch import nn
    from torch.optim.swa_utils import AveragedModel

    from fmnist_lightning.training.classifier import ImageClassifier

    distill = Distillation(teacher=str(teacher), temperature=3.0)
    student = ImageClassifier(net=nn.Flatten(), optimizer=partial(torch.optim.SGD, lr=0.1), distill=distill)
    # ema=default (Lightning's EMAWeightAveraging) keeps an AveragedModel of the module: a deep copy of it.
    copied = AveragedModel(student).module.distill
    assert isinstance(copied, Distillation) and copied is not distill and copied.temperature == 3.0
    assert copied.teacher is distill.teacher  # one teacher in memory, not two
