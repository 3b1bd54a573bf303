"""Backbones are plain nn.Modules selected by name; each trains through the real Trainer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fmnist_lightning.config import CONF_DIR
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models import count_parameters, create_model, list_models
from fmnist_lightning.train import train

MODEL_CONFIGS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def test_every_registered_model_has_a_config() -> None:
    assert sorted(list_models()) == MODEL_CONFIGS


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_trains_with_fast_dev_run(make_cfg, name: str) -> None:
    metrics = train(make_cfg(f"model={name}", "debug=fast_dev_run"))
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert 0.0 <= metrics["test/acc"] <= 1.0
    assert metrics["params"] > 0 and metrics["flops_per_image"] > 0


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_is_plain_module_with_logits(name: str) -> None:
    model = create_model(name)
    assert isinstance(model, nn.Module) and not hasattr(model, "trainer")
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


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
