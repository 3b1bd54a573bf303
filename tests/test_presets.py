"""Experiment presets compose with any group choice: a preset selects options and pins no key of a
group whose option it selects, every preset x optim x sched cell either builds and steps its optimizer
and scheduler or is refused with one line before any data is read, and every preset and bench row still
resolves as it did."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from config_snapshots import cases, resolved, snapshot_path
from fmnist_lightning.config.checks import check_config
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.training.builders import build
from fmnist_lightning.training.run_setup import build_module

CASES = cases()
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
OPTIMS = sorted(p.stem for p in (CONF_DIR / "optim").glob("*.yaml"))
SCHEDS = sorted(p.stem for p in (CONF_DIR / "sched").glob("*.yaml"))
# Cells refused before any data is read, each for a reason of its own (not a key another option leaked).
REFUSED = {
    # no validation split (val_size=0), so nothing for ReduceLROnPlateau to watch
    **{
        (x, o, "plateau"): "sched=plateau needs validation metrics"
        for x in (
            "best",
            "best_small",
            "lenet",
            "linear_baseline",
            "speedrun",
            "speedrun94",
            "tinyvgg_baseline",
            "tinyvgg_randaugment",
        )
        for o in OPTIMS
    },
    # an MLP has no convolution filters for Muon
    **{
        ("linear_baseline", o, s): "the model has no convolution filters"
        for o in OPTIMS
        if o.startswith("muon")
        for s in SCHEDS
        if s != "plateau"
    },
}


def composed(*overrides: str) -> DictConfig:
    """The job config as the CLI composes it (Hydra's config set, so checks see the group choices)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = "/nonexistent/run"
    return cfg


@cache
def option_node(group: str, option: str) -> Any:
    """An option's own node, composed with nothing else chosen."""
    return OmegaConf.to_container(composed(f"{group}={option}")[group])


def selected_groups(experiment: str) -> dict[str, str]:
    """``group -> option`` a preset selects in its defaults list, its parents' included."""
    text = yaml.safe_load((CONF_DIR / "experiment" / f"{experiment}.yaml").read_text())
    chosen: dict[str, str] = {}
    for entry in text.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":
            chosen |= selected_groups(entry)
        elif isinstance(entry, dict):
            for key, option in entry.items():
                chosen[key.removeprefix("override ").strip("/")] = option
    return chosen


def package_of(group: str, option: str) -> str:
    """Where an option's keys land in the config (``ema``'s in ``callbacks.ema``)."""
    first = (CONF_DIR / group / f"{option}.yaml").read_text().splitlines()[0]
    return first.split("@package", 1)[1].strip() if "@package" in first else group


class TinyNet(torch.nn.Module):
    """The smallest backbone with every kind of parameter the optimizers treat apart: a filter bank (Muon's),
    a BatchNorm scale and bias, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, stride=2),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(4, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def one_step(module: Any, config: Any) -> None:
    """One training step of the module with the optimizer and scheduler it built."""
    optimizer = config["optimizer"] if isinstance(config, dict) else config
    loss = torch.nn.functional.cross_entropy(module(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if isinstance(config, dict):
        scheduler = config["lr_scheduler"]["scheduler"]
        scheduler.step(loss.item()) if isinstance(
            scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau
        ) else scheduler.step()


def expected_class(node: dict[str, Any]) -> str:
    # optim=lookahead's target is a function that returns pytorch-optimizer's Lookahead.
    target = node["_target_"].rpartition(".")[2]
    return "Lookahead" if target == "lookahead" else target


def with_sched(cfg: DictConfig, sched_cfg: DictConfig) -> DictConfig:
    """``cfg`` (X optim=Y) with the sched node and choice of ``sched_cfg`` (X sched=Z): X optim=Y sched=Z, as
    test_grid_cells_compose_as_assembled shows. In place: cheaper than a copy of the whole config."""
    with open_dict(cfg):
        cfg.sched = copy.deepcopy(sched_cfg.sched)
    with read_write(cfg.hydra.runtime.choices):
        cfg.hydra.runtime.choices.sched = sched_cfg.hydra.runtime.choices.sched
    return cfg


def assert_refused(cell: tuple[str, str, str], exc: ConfigError) -> None:
    assert REFUSED.get(cell) is not None and REFUSED[cell] in str(exc), (cell, str(exc))
    assert "\n" not in str(exc), cell


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_optim_and_sched_option_works_under_every_preset(experiment: str) -> None:
    # experiment=X optim=Y gives Y's own settings under X's other ones; so does sched=Z. X is composed with
    # each optim option and with each sched option (the two groups are independent: Hydra composes preset x optim
    # x sched cells to the same configs, test_grid_cells_compose_as_assembled), then every optim x sched cell is
    # checked as a run is (config checks, then the module with its optimizer and scheduler on X's own
    # backbone, before any data), and its optimizer and scheduler take a step on a tiny model.
    with_optim = {o: composed(f"experiment={experiment}", f"optim={o}") for o in OPTIMS}
    with_scheds = {s: composed(f"experiment={experiment}", f"sched={s}") for s in SCHEDS}
    selected = selected_groups(experiment)
    preset = with_optim[selected["optim"]]  # the preset alone: its own optimizer chosen again
    plain = composed(*(f"{group}={option}" for group, option in selected.items()))
    for group, option in selected.items():
        # A preset sets no key of a group it selects: its settings for it are an option file of that group.
        where = package_of(group, option)
        assert OmegaConf.to_container(OmegaConf.select(preset, where)) == OmegaConf.to_container(
            OmegaConf.select(plain, where)
        ), f"experiment={experiment} sets keys of {where} beside {group}={option}"
    for optim in OPTIMS:
        assert OmegaConf.to_container(with_optim[optim].optim) == option_node("optim", optim), (experiment, optim)
    for sched in SCHEDS:
        assert OmegaConf.to_container(with_scheds[sched].sched) == option_node("sched", sched), (experiment, sched)
    net, tiny = build(preset.model, "model"), TinyNet()
    start = {k: v.clone() for k, v in tiny.state_dict().items()}
    for optim in OPTIMS:
        own = option_node("optim", optim)
        for sched in SCHEDS:
            cfg = with_sched(with_optim[optim], with_scheds[sched])
            HydraConfig.instance().set_config(cfg)
            cell = (experiment, optim, sched)
            try:
                check_config(cfg)
                build_module(cfg, net=net)
            except ConfigError as exc:
                assert_refused(cell, exc)
                continue
            assert cell not in REFUSED, (cell, "was not refused")
            tiny.load_state_dict(start)
            module = build_module(cfg, net=tiny)
            config = module.optimization()
            optimizer = config["optimizer"] if isinstance(config, dict) else config
            assert type(optimizer).__name__ == expected_class(own), cell
            assert optimizer.defaults["lr"] == own["lr"], cell
            one_step(module, config)
            moved = [name for name, p in tiny.named_parameters() if not torch.equal(p.detach(), start[name])]
            assert moved, (cell, "the optimizer's step changed no weight")


def covering_cells() -> list[tuple[str, str, str]]:
    """Preset x optim x sched cells that hold every pair of the three choices at least once: each preset with
    every optim option, and its sched option turning one step with each preset, so that every optim meets every
    sched under some preset. A coupling of two groups shows in every cell that holds its pair; the whole product
    (462 cells, 0.14 s a compose) took 110 s of CI for what 77 cells show."""
    return [
        (experiment, optim, SCHEDS[(i + k) % len(SCHEDS)])
        for k, experiment in enumerate(EXPERIMENTS)
        for i, optim in enumerate(OPTIMS)
    ]


def test_the_composed_cells_hold_every_pair_of_choices() -> None:
    cells = covering_cells()
    for a, b in ((0, 1), (0, 2), (1, 2)):
        pairs = {(cell[a], cell[b]) for cell in cells}
        wanted = {(x, y) for x in (EXPERIMENTS, OPTIMS, SCHEDS)[a] for y in (EXPERIMENTS, OPTIMS, SCHEDS)[b]}
        assert pairs == wanted, f"add presets or options to covering_cells: {sorted(wanted - pairs)[:3]} missing"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_grid_cells_compose_as_assembled(experiment: str) -> None:
    # The fast grid above composes X optim=Y and X sched=Z and puts the two together; here X optim=Y sched=Z is
    # composed by Hydra itself, for the cells of covering_cells, and must give the same job config.
    cells = [(optim, sched) for x, optim, sched in covering_cells() if x == experiment]
    with_scheds = {s: composed(f"experiment={experiment}", f"sched={s}") for s in {sched for _, sched in cells}}
    for optim, sched in cells:
        with_optim = composed(f"experiment={experiment}", f"optim={optim}")
        whole = composed(f"experiment={experiment}", f"optim={optim}", f"sched={sched}")
        assert job(whole) == job(with_sched(with_optim, with_scheds[sched])), (experiment, optim, sched)


def job(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    container.pop("hydra")
    return container


def test_preset_with_another_optimizer_gets_its_defaults() -> None:
    # The example: before, AdamW received the preset's Muon momentum and failed 16 s in.
    cfg = composed("experiment=best_small", "optim=adamw")
    check_config(cfg)
    assert OmegaConf.to_container(cfg.optim) == option_node("optim", "adamw")
    module = build_module(cfg)
    optimizer = module.optimization()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 0.001 and optimizer.defaults["weight_decay"] == 0.0001
    # and the preset's other settings stay
    assert cfg.model.widths == [16, 24, 40, 64] and cfg.trainer.max_epochs == 96 and cfg.module.tta_shift == 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_preset_and_bench_row_resolve_as_frozen(name: str) -> None:
    # The published tables (README, docs/results.md, bench/results/) were measured with these configs.
    frozen = yaml.safe_load(snapshot_path(name).read_text())
    assert resolved(CASES[name]) == frozen["config"], (
        f"{name} no longer resolves as frozen in {snapshot_path(name).name}; if the change is deliberate, "
        "regenerate with `python tests/config_snapshots.py` and say so in the commit"
    )


def test_every_preset_and_bench_row_is_frozen() -> None:
    assert {p.stem for p in snapshot_path("x").parent.glob("*.yaml")} == set(CASES)


@pytest.mark.parametrize(
    ("overrides", "optimizer", "expected"),
    [
        # the cases: before, AdamW died on Muon's momentum 16 s in, and SGD ran silently at Adam's lr 0.001
        (["experiment=best_small", "optim=adamw"], "torch.optim.AdamW", {"lr": 0.001, "weight_decay": 0.0001}),
        (["experiment=bncnn", "optim=sgd"], "torch.optim.SGD", {"lr": 0.1, "momentum": 0.0, "nesterov": False}),
        (["experiment=speedrun", "optim=sgd"], "torch.optim.SGD", {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0}),
    ],
)
def test_preset_trains_with_the_chosen_optimizers_own_settings(
    make_cfg, overrides: list[str], optimizer: str, expected: dict[str, float]
) -> None:
    from fmnist_lightning.train import train

    cfg = make_cfg(
        *overrides,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "model.compile=false",
    )
    train(cfg)
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["fmnist_config"]["optim"]["_target_"] == optimizer
    group = checkpoint["optimizer_states"][0]["param_groups"][0]
    # OneCycleLR (best_small, speedrun) moves lr and momentum through the run; its peak is the optimizer's lr.
    stepped = "max_lr" in group
    for key, value in expected.items():
        if stepped and key in ("lr", "momentum"):
            continue
        assert group[key] == pytest.approx(value), key
    if stepped:
        assert group["max_lr"] == pytest.approx(expected["lr"])
    assert optimizer != "torch.optim.AdamW" or "momentum" not in group
