"""Backbones are plain nn.Modules selected by name; each trains through the real Trainer."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.registry import count_parameters, create_model, list_models
from fmnist_lightning.train import train

# Each backbone's own config (conf/model/<name>.yaml); the recipes' variants (compact_wide, ...) start from one
# of them (defaults: [compact, _self_]) and are built by the presets' tests.
MODEL_CONFIGS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if "defaults:" not in p.read_text())


def test_every_registered_model_has_a_config() -> None:
    assert sorted(list_models()) == MODEL_CONFIGS


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_trains_with_fast_dev_run(make_cfg, name: str) -> None:
    metrics = train(make_cfg(f"model={name}", "debug=fast_dev_run"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["params"] > 0 and metrics["flops_per_image"] > 0


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_is_plain_module_with_logits(make_cfg, name: str) -> None:
    model = instantiate(make_cfg(f"model={name}").model)
    assert isinstance(model, nn.Module) and not hasattr(model, "trainer")
    # In evaluation: an ensemble returns its members' logits apart while it trains (test_ensemble.py).
    assert model.eval()(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_tinyvgg_matches_the_notebook() -> None:
    # 2 blocks x 2 convs (1->10, 10->10, 10->10, 10->10) + Linear(490 -> 10)
    expected = (1 * 9 * 10 + 10) + 3 * (10 * 9 * 10 + 10) + (490 * 10 + 10)
    assert count_parameters(create_model("tinyvgg", hidden_units=10)) == expected


def test_mlp_default_is_v0() -> None:
    assert count_parameters(create_model("mlp")) == 784 * 10 + 10 + 10 * 10 + 10


def test_budget_guard_names_count_and_budget() -> None:
    with pytest.raises(ConfigError, match=r"7,740 parameters, over the budget model.max_params=1,000"):
        create_model("tinyvgg", max_params=1000)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ConfigError, match="tinyvgg"):
        create_model("resnet9000")


def test_channels_last_weights() -> None:
    model = create_model("tinyvgg", channels_last=True)
    conv = model.features[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_lenet_has_the_reference_parameter_count() -> None:
    # conv 1->6 (60) + conv 6->16 (880) + FC 400->120 (48,120) + 120->84 (10,164) + 84->10 (850)
    assert count_parameters(create_model("lenet")) == 60_074


def test_bncnn_has_the_reference_parameter_count() -> None:
    assert count_parameters(create_model("bncnn")) == 1_238_538


def test_bncnn_without_batch_norm_drops_the_bn_layers() -> None:
    with_bn, without_bn = create_model("bncnn"), create_model("bncnn", batch_norm=False)
    assert _has_batch_norm(with_bn) and not _has_batch_norm(without_bn)
    # Each BN layer has a scale and a shift per channel: 2 * (24 + 96 + 192).
    assert count_parameters(with_bn) - count_parameters(without_bn) == 2 * (24 + 96 + 192)
    assert without_bn(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_compact_stays_under_its_budget() -> None:
    # The YAML's max_params would raise ConfigError if the default grew past it.
    model = create_model("compact", max_params=100_000)
    assert count_parameters(model) < 100_000
    with pytest.raises(ConfigError, match="over the budget"):
        create_model("compact", widths=[64, 96, 128], max_params=100_000)


def test_resnet_depth_and_width_change_size_not_output() -> None:
    x = torch.zeros(2, 1, 28, 28)
    counts = {}
    for depth, width in ((1, 8), (3, 16), (5, 16), (3, 32)):
        model = create_model("resnet", depth=depth, width=width).eval()
        assert model(x).shape == (2, 10)
        counts[depth, width] = count_parameters(model)
    assert counts[1, 8] < counts[3, 16] < counts[5, 16]
    assert counts[3, 16] < counts[3, 32]


def test_resnet_rejects_empty_stages() -> None:
    with pytest.raises(ConfigError, match="depth >= 1"):
        create_model("resnet", depth=0)


def test_tinyvgg3_batch_norm_switch_and_3x3_feature_map() -> None:
    with_bn = create_model("tinyvgg3", batch_norm=True)
    without_bn = create_model("tinyvgg3", batch_norm=False)
    assert _has_batch_norm(with_bn) and not _has_batch_norm(without_bn)
    for model in (with_bn, without_bn):
        assert model.features(torch.zeros(2, 1, 28, 28)).shape == (2, 10, 3, 3)


def test_dwsep_downsamples_with_strided_depthwise_convs() -> None:
    model = create_model("dwsep")
    strided = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert strided and all(m.groups == m.in_channels > 1 for m in strided)
    assert model.features(torch.zeros(1, 1, 28, 28)).shape[-2:] == (7, 7)
    with pytest.raises(ConfigError, match="one stride per width"):
        create_model("dwsep", widths=[32, 64], strides=[1])
