"""model=ensemble: several networks trained side by side, each on its own loss, tested on their averaged probabilities.

Built from the real config (model=ensemble, model=compact_deep_x3), trained by a real Trainer; the numerics are
checked against each member run on its own.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from fmnist_lightning.config.files import project_root
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.ensemble import Ensemble
from fmnist_lightning.train import train
from fmnist_lightning.training.builders import build
from fmnist_lightning.training.callbacks.data_init import convolutions
from fmnist_lightning.training.checkpoint_files import restore_run

SMALL = ["model.member.widths=[8,8,16]", "model.members=2"]


def _ensemble(make_cfg, *overrides: str) -> Ensemble:
    net = build(make_cfg("model=ensemble", *SMALL, *overrides).model, "model")
    assert isinstance(net, Ensemble)
    return net


def test_evaluation_gives_the_log_of_the_members_mean_probabilities(make_cfg) -> None:
    torch.manual_seed(0)
    net = _ensemble(make_cfg, "model.members=3").eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        by_hand = torch.stack([member(x).softmax(dim=-1) for member in net.members]).mean(dim=0).log()
        out = net(x)
    assert out.shape == (5, 10)
    assert torch.allclose(out, by_hand, atol=1e-6)
    # The members start apart: each call of the member factory drew its own weights.
    first = [m.features[0].weight for m in net.members]
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    with torch.no_grad():
        assert net.train()(x).shape == (3, 5, 10)


def test_each_member_gets_the_gradient_it_would_get_trained_alone(make_cfg) -> None:
    torch.manual_seed(0)
    cfg = make_cfg("model=ensemble", *SMALL, "module.label_smoothing=0.1")
    module = instantiate(cfg.module, net=instantiate(cfg.model))
    alone = [copy.deepcopy(member) for member in module.net.members]
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    module.train()
    module.training_step((x, y), 0).backward()
    for member, single in zip(module.net.members, alone, strict=True):
        single.train()
        nn.functional.cross_entropy(single(x), y, label_smoothing=0.1).backward()
        for joint, own in zip(member.parameters(), single.parameters(), strict=True):
            assert torch.allclose(joint.grad, own.grad, atol=1e-6)
    # The epoch's logged loss is the members' mean, on a single network's scale.
    with torch.no_grad():
        losses = [nn.functional.cross_entropy(single(x), y, label_smoothing=0.1) for single in alone]
    assert module.train_loss.compute() == pytest.approx(float(torch.stack(losses).mean()), rel=1e-5)


def test_compact_deep_x3_trains_whitens_each_member_and_tests_the_ensemble(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # A vanishing lr and no schedule: the weights stay as the initialisation left them, so the checkpoint shows it.
    cfg = make_cfg(
        "model=compact_deep_x3",
        "model.member.widths=[18,8,16,16]",
        "init=whiten",
        "aug=shift_flip",
        "optim=muon_recipe",
        "optim.lr=1e-12",
        "optim.rest.lr=1e-12",
        "sched=none",
        "module.tta=true",
        "module.tta_shift=1",
        "debug=limit_batches",
        "trainer.max_epochs=1",
        output_dir=run_dir,
    )
    assert cfg.model.members == 3 and cfg.model.member.name == "compact" and cfg.model.member.pool_first
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test_tta"]
    # bench/ensemble_members.py: each member alone and the ensemble, on the run's validation split, per view.
    spec = importlib.util.spec_from_file_location("ensemble_members", project_root() / "bench" / "ensemble_members.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main([metrics["best_model_path"], "--limit", "1", "--out", str(tmp_path / "members")])
    report = json.loads((tmp_path / "members" / "members.json").read_text())
    assert list(report["accuracy"]) == ["plain", "mirror", "mirror + 1 px shifts"]
    assert all(len(row) == 4 and all(0 <= a <= 1 for a in row) for row in report["accuracy"].values())
    assert (
        "| view | member 0 | member 1 | member 2 | members' mean | ensemble | gain |"
        in (tmp_path / "members" / "members.md").read_text()
    )
    one = instantiate(make_cfg("model=compact_deep", "model.widths=[18,8,16,16]").model)
    assert metrics["params"] == 3 * sum(p.numel() for p in one.parameters())
    net = restore_run(metrics["best_model_path"]).module.net
    for member in net.members:
        stem = convolutions(member)[0].weight.detach().float()
        # 9 whitening filters of the 3x3 patches and their negatives, in every member.
        assert torch.allclose(stem[:9], -stem[9:18])


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["model.members=1"], "model.members=1: an ensemble needs at least 2"),
        (["~model.member._partial_"], "model.member must build one network per call: add `_partial_: true`"),
        (["model.member.widths=[8,8,8,8,8,8,8]"], "compact needs a stem width plus at most four stage widths"),
    ],
)
def test_a_wrong_ensemble_setting_is_one_line(make_cfg, overrides: list[str], line: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(line)):
        _ensemble(make_cfg, *overrides)


def test_a_teacher_for_an_ensemble_is_refused_before_the_run(make_cfg, tmp_path: Path) -> None:
    from fmnist_lightning.config.checks import check_config
    from fmnist_lightning.config.combinations import ENSEMBLE_AND_DISTILL

    cfg = make_cfg("model=ensemble", *SMALL, f"distill.teacher={tmp_path / 'teacher.ckpt'}")
    with pytest.raises(ConfigError) as refused:
        check_config(cfg)
    assert str(refused.value) == ENSEMBLE_AND_DISTILL


def test_the_report_names_the_members_settings(make_cfg) -> None:
    from omegaconf import OmegaConf

    from fmnist_lightning.results.report import key_config

    cfg = make_cfg("model=compact_deep_x3", "optim=muon_recipe")
    config = {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "optim", "sched", "data")}
    rows = dict(key_config(config))
    assert rows["model"].startswith("ensemble (members=3, member.name=compact, member.widths=[32, 64, 128, 256], ")
    assert "rest.lr=0.05" in rows["optimizer"] and "_target_" not in rows["optimizer"] + rows["model"]
