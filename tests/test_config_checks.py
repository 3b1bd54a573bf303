"""Every config is checked before anything is built or read: a key its ``_target_`` does not take, or
settings that cannot work together, end the run with one line and exit status 2."""

from __future__ import annotations

import importlib.util
import inspect
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import cli_overrides, compose_cfg, run_cli
from fmnist_lightning.config.checks import check_config, target_nodes
from fmnist_lightning.config.files import CONF_DIR, project_root
from fmnist_lightning.config.literal_choices import literal_choices
from fmnist_lightning.config.signatures import FORWARDED_KWARGS, locate, lookup, source_signature, with_forwarded
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.models.registry import _registered, config_signature, list_models


def shape(signature: inspect.Signature) -> list[tuple[str, inspect._ParameterKind]]:
    return [(p.name, p.kind) for p in signature.parameters.values()]


def targets_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            yield from targets_in(child)


def every_target() -> set[str]:
    """Every ``_target_`` in the config files (conf/ and bench/conf/, Hydra's own settings included)."""
    files = [*CONF_DIR.rglob("*.yaml"), *(project_root() / "bench" / "conf").rglob("*.yaml")]
    return {target for path in files for target in targets_in(yaml.safe_load(path.read_text()))}


def test_signatures_read_from_source_match_inspect() -> None:
    # The source is read so that the check answers before torch and Lightning are imported; it must agree
    # with the imported callable wherever it gives an answer at all.
    targets = every_target()
    assert len(targets) > 40
    unread = set()
    for target in sorted(targets):
        static = source_signature(target)
        if static is None:
            unread.add(target)
            continue
        assert shape(static) == shape(inspect.signature(locate(target))), target
    assert not unread


@pytest.mark.parametrize("name", list_models())
def test_model_nodes_take_the_backbones_own_arguments(name: str) -> None:
    signature = config_signature({"name": name})
    backbone = inspect.signature(_registered(name))
    for parameter in backbone.parameters.values():
        assert parameter.name in signature.parameters
    assert {"name", "max_params", "channels_last", "compile", "bn_momentum"} <= set(signature.parameters)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["optim=sgd", "+optim.weight_decy=0.1"],
            "optim.weight_decy: torch.optim.SGD (optim=sgd) takes no argument `weight_decy`. "
            "Did you mean `weight_decay`?",
        ),
        (
            ["model=compact", "+model.widht=[8,8,8]"],
            "model.widht: fmnist_lightning.models.registry.create_model "
            "(model=compact) takes no argument `widht`. Did you mean `widths`?",
        ),
        (
            ["aug=strong", "+aug.ops.0.paddin=3"],
            "aug.ops.0.paddin: fmnist_lightning.data.transforms.RandomCrop "
            "(aug=strong) takes no argument `paddin`. Did you mean `padding`? It takes padding.",
        ),
        (["ema=default", "+callbacks.ema.decy=0.9"], "(ema=default) takes no argument `decy`. Did you mean `decay`?"),
        (["+callbacks.model_checkpoint.montor=x"], "ModelCheckpoint (callbacks=default) takes no argument `montor`"),
        (["+trainer.max_epoch=3"], "Did you mean `max_epochs`?"),
        # TensorBoardLogger's **kwargs go to SummaryWriter: its keys pass, a typo of one does not.
        (["+logger.tensorboard.flush_secs=5", "+logger.tensorboard.comment=x"], None),
        (
            ["+logger.tensorboard.flush_sec=5"],
            "TensorBoardLogger (logger=default) takes no argument `flush_sec`. Did you mean `flush_secs`?",
        ),
        (["+logger.tensorboard.log_dir=x"], "takes no argument `log_dir`. Did you mean `log_graph`?"),
        pytest.param(
            ["logger=wandb", "+logger.wandb.mode=sideways"],
            "logger.wandb.mode=sideways: lightning.pytorch.loggers.WandbLogger (logger=wandb) takes one of online, "
            "offline, disabled, shared, null; correct the value, e.g. logger.wandb.mode=online",
            marks=pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="the tracking extra"),
        ),
        pytest.param(
            ["logger=wandb", "+logger.wandb.entity=me", "+logger.wandb.mode=disabled"],
            None,
            marks=pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="the tracking extra"),
        ),
        (["sched=step", "+sched.scheduler.gama=0.5"], "Did you mean `gamma`?"),
        (
            ["experiment=speedrun", "sched=plateau", "data.val_size=0"],
            "sched=plateau needs validation metrics but data.val_size=0",
        ),
    ],
)
def test_a_key_the_target_does_not_take_is_one_line(tmp_path: Path, overrides: list[str], line: str | None) -> None:
    cfg = compose_cfg(tmp_path, tmp_path / "run", *overrides)
    if line is None:
        check_config(cfg)
        return
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert line in str(caught.value) and "\n" not in str(caught.value)


def test_a_long_list_of_accepted_keys_is_cut_to_the_nearest(tmp_path: Path) -> None:
    cfg = compose_cfg(tmp_path, tmp_path / "run", "+trainer.max_epoch=3")
    with pytest.raises(ConfigError, match=r"and \d+ more\. Correct or remove the key\.$"):
        check_config(cfg)


def test_each_node_is_checked_where_it_is_defined(tmp_path: Path) -> None:
    # module.optimizer is ${optim}: the optimizer is checked (and named) as optim, once.
    cfg = compose_cfg(tmp_path, tmp_path / "run")
    paths = [path for path, _ in target_nodes(cfg)]
    assert "optim" in paths and "module.optimizer" not in paths and "data.augmentation" not in paths
    assert len(paths) == len(set(paths))


def test_a_value_check_answers_alike_whether_its_module_is_imported_or_not(tmp_path: Path) -> None:
    import lightning.pytorch  # noqa: F401 - imported: inspect would now give the Trainer's annotations as objects

    # The Trainer's precision is annotated with an alias (a name in its source): left to the Trainer, imported or not.
    check_config(compose_cfg(tmp_path, tmp_path / "run", "trainer.precision=banana"))
    # FilterMuon writes its Literal out: torch would take a misspelt name as no scaling, silently.
    with pytest.raises(ConfigError, match=r"^optim.adjust_lr_fn=match_rms_adam: .* takes one of original, "):
        check_config(
            compose_cfg(tmp_path, tmp_path / "run", "experiment=speedrun", "optim.adjust_lr_fn=match_rms_adam")
        )
    check_config(compose_cfg(tmp_path, tmp_path / "run", "experiment=speedrun", "optim.adjust_lr_fn=match_rms_adamw"))


def test_kwargs_take_any_key_unless_the_library_says_where_they_go() -> None:
    launcher = "hydra_plugins.fmnist_slurm_launcher.slurm_launcher.QueueAwareSlurmLauncher"
    found = lookup(launcher, {"anything": 1})
    assert found.signature is not None and with_forwarded(found) is found.signature
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in found.signature.parameters.values())

    logger = lookup("lightning.pytorch.loggers.TensorBoardLogger", {"flush_secs": 5})
    signature = with_forwarded(logger)
    assert signature is not None and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()
    )
    writer = inspect.signature(locate("torch.utils.tensorboard.SummaryWriter")).parameters
    assert set(signature.parameters) == (set(logger.signature.parameters) - {"kwargs"}) | (set(writer) - {"log_dir"})


def test_the_keys_a_tensorboard_logger_forwards_reach_its_writer(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    node = {"_target_": "lightning.pytorch.loggers.TensorBoardLogger", "save_dir": str(tmp_path)}
    writer = instantiate({**node, "flush_secs": 7, "filename_suffix": ".x"}).experiment
    assert (writer.flush_secs, writer.filename_suffix) == (7, ".x")
    writer.close()
    # Why log_dir is left out of what the check accepts: the logger passes it itself.
    with pytest.raises(TypeError, match="multiple values for keyword argument 'log_dir'"):
        instantiate({**node, "log_dir": str(tmp_path / "x")}).experiment  # noqa: B018 - the property builds it


def test_the_forwarded_callables_are_those_the_libraries_export() -> None:
    for target, (other, _) in FORWARDED_KWARGS.items():
        assert lookup(target.rsplit(".", 2)[0] + "." + target.rsplit(".", 1)[1], {}).defined_at == target
        if importlib.util.find_spec(other.split(".")[0]) is None:
            continue
        assert shape(source_signature(other)) == shape(inspect.signature(locate(other)))
    wandb = pytest.importorskip("wandb")
    assert wandb.init is locate(FORWARDED_KWARGS["lightning.pytorch.loggers.wandb.WandbLogger"][0])


@pytest.mark.parametrize(
    ("annotation", "choices"),
    [
        ("Literal['online', 'offline'] | None", ("online", "offline", None)),
        ("Optional[Literal['a']]", ("a", None)),
        ("typing.Literal[1, 2]", (1, 2)),
        (Literal["min", "max"], ("min", "max")),
        (Literal["x"] | None, ("x", None)),
        ("bool | Literal['auto']", None),  # admits any bool alongside: not a list this check can hold values to
        ("str", None),
        (str, None),
        ("Literal[Mode.A]", None),
        (inspect.Parameter.empty, None),
    ],
)
def test_literal_choices_of_an_annotation(annotation: Any, choices: tuple[Any, ...] | None) -> None:
    assert literal_choices(annotation) == choices


def test_typo_added_with_plus_stops_before_the_data(tmp_path: Path) -> None:
    # The case: Hydra's struct check lets a key added with + through. data.root points nowhere, so a
    # run that reached its data would fail on it instead: the config line proves nothing was read.
    run_dir = tmp_path / "run"
    result = run_cli(
        "optim=sgd",
        "+optim.weight_decy=0.1",
        f"data.root={tmp_path / 'nowhere'}",
        "data.download=false",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: optim.weight_decy: torch.optim.SGD"), result.stderr
    assert "did you mean `weight_decay`" in errors[0].lower()
    assert json.loads((run_dir / "status.json").read_text())["error_type"] == "ConfigError"
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    ("setting", "line"),
    [
        ("trainer.limit_train_batches=-1", "a number of batches >= 0 or a fraction in [0, 1] (null: all)"),
        ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 is impossible"),
        ("trainer.limit_test_batches=all", "trainer.limit_test_batches='all' is str, not a number"),
    ],
)
def test_a_batch_limit_is_a_count_or_a_fraction(tmp_path: Path, setting: str, line: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(line)):
        check_config(compose_cfg(tmp_path, tmp_path / "run", setting))
    for fine in ("0", "3", "0.5", "1.0", "null"):
        check_config(compose_cfg(tmp_path, tmp_path / "run", setting.split("=")[0] + "=" + fine))


def test_a_folder_a_logger_or_callback_cannot_write_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("kept\n")
    cases = {
        f"callbacks.model_checkpoint.dirpath={afile}/ckpt": f"is not a folder ({afile} is a file)",
        f"logger.tensorboard.save_dir={afile}": "is a file, not a folder",
        # Tried, not read from permission bits: root may write anywhere else, but not into /proc.
        "logger.tensorboard.save_dir=/proc/fmnist-nope": "cannot be written (/proc: ",
    }
    for setting, problem in cases.items():
        with pytest.raises(ConfigError) as caught:
            check_config(compose_cfg(tmp_path, tmp_path / "run", setting))
        key, _, value = setting.partition("=")
        assert str(caught.value).startswith(f"{key}={value} {problem}"), str(caught.value)
        assert str(caught.value).endswith("; pick a folder you can write to")
    assert afile.read_text() == "kept\n" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    # A folder that does not exist yet is made by its writer: fine, and nothing is left by the trial.
    check_config(compose_cfg(tmp_path, tmp_path / "run", f"logger.tensorboard.save_dir={tmp_path}/new/deeper"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_unwritable_logger_folder_stops_the_run_before_any_tracker_opens(data_root: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    result = run_cli(*cli_overrides(data_root, tmp_path), "logger=many", f"logger.tensorboard.save_dir={afile}/tb")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"error: logger.tensorboard.save_dir={afile}/tb is not a folder ({afile} is a file); pick a folder you can "
        "write to"
    ]
    # The MLflow logger beside it made no experiment, and no training started.
    assert not list(tmp_path.rglob("mlflow")) and not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (
            ["experiment=best_small", "optim=adamw", "+optim.momentum=0.9"],
            "torch.optim.AdamW (optim=adamw) takes no argument `momentum`",
        ),
        (["experiment=linear_baseline", "optim=muon"], "the model has no convolution filters"),
        # The metrics and the mix would take 5 classes, the labels and the heads have 10: refused, not a late crash.
        (
            ["mix=cutmix", "module.num_classes=5"],
            "error: module.num_classes=5 is impossible: Fashion-MNIST has 10 classes (labels 0-9)",
        ),
        (["module.num_classes=10.0"], "error: module.num_classes=10.0 is impossible"),
        # Settings that would be silently unused: a momentum the one-cycle schedule overrules, a cosine without a
        # number of epochs, a callback's keys without the callback, distillation turned "off" by a name.
        (
            ["experiment=speedrun", "optim.momentum=0.5"],
            "error: optim.momentum would have no effect: the one-cycle schedule cycles the momentum (or Adam's beta1) "
            "itself, between sched.scheduler.base_momentum=0.85 and sched.scheduler.max_momentum=0.95",
        ),
        (
            ["sched=cosine", "trainer.max_epochs=-1", "trainer.max_steps=12"],
            "error: sched=cosine anneals over trainer.max_epochs, and trainer.max_epochs=-1 sets no number of epochs",
        ),
        (
            ["experiment=best", "ema=none", "+callbacks.ema.decay=0.99"],
            "error: callbacks.ema has no _target_, so its keys (decay) would not be used: choose ema=default",
        ),
        (["distill=none"], "error: distill=none is not an option: distillation is off while distill.teacher is null"),
        (
            ["experiment=speedrun", "trainer.max_epochs=-1"],
            "error: OneCycleLR needs a finite run to plan its schedule: set trainer.max_epochs or trainer.max_steps",
        ),
    ],
)
def test_impossible_combinations_stop_before_the_data(tmp_path: Path, overrides: list[str], line: str) -> None:
    result = run_cli(
        *overrides, f"data.root={tmp_path / 'nowhere'}", "data.download=false", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2, result.stderr
    errors = [text for text in result.stderr.splitlines() if text.strip()]
    assert len(errors) == 1 and line in errors[0], result.stderr


CHECK_ONLY = """
import sys
from hydra import compose, initialize_config_dir
from fmnist_lightning.config.checks import check_config
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
    for overrides in ([], ["experiment=best", "ema=default", "logger=many"], ["aug=autoaugment"]):
        check_config(compose("config", overrides=overrides))
print(sorted(m for m in ("torch", "lightning", "torchvision", "matplotlib") if m in sys.modules))
"""


def test_checking_a_config_imports_neither_torch_nor_lightning() -> None:
    # What lets a wrong key answer in about a second: every target's signature is read from its source.
    result = subprocess.run([sys.executable, "-c", CHECK_ONLY], capture_output=True, text=True, cwd=project_root())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_target_that_leads_out_of_the_allowed_packages_is_refused(tmp_path: Path) -> None:
    # os is imported by an allowed module: its name starts well, but the callable is posix.system.
    cfg = compose_cfg(
        tmp_path, tmp_path / "run", "+callbacks.x={_target_: fmnist_lightning.cli.exits.os.system, _args_: [echo]}"
    )
    with pytest.raises(ConfigError, match=r"\(it is posix\.system\) is not among the callables a config may build"):
        check_config(cfg)


def test_a_misspelled_target_is_one_line_with_the_nearest_name(tmp_path: Path) -> None:
    result = run_cli("optim._target_=torch.optim.Adamx", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        "error: optim._target_=torch.optim.Adamx cannot be found: torch.optim has no Adamx; did you mean "
        "torch.optim.Adamax? Check the name, and that the package that provides it is installed"
    ], lines


def test_a_search_is_a_sweep_without_m_and_removing_one_is_not() -> None:
    from fmnist_lightning.__main__ import searches_are_sweeps

    assert searches_are_sweeps(["hparams_search=lr_wd"]) == ["hparams_search=lr_wd", "--multirun"]
    assert searches_are_sweeps(["-m", "hparams_search=lr_wd"]) == ["-m", "hparams_search=lr_wd"]
    assert searches_are_sweeps(["--multi", "hparams_search=lr_wd"]) == ["--multi", "hparams_search=lr_wd"]
    # A flag's value is not a search, and neither is a search removed or set to null.
    assert searches_are_sweeps(["-p", "hparams_search=lr_wd"]) == ["-p", "hparams_search=lr_wd"]
    assert searches_are_sweeps(["~hparams_search"]) == ["~hparams_search"]
    assert searches_are_sweeps(["++hparams_search=null"]) == ["++hparams_search=null"]
    assert searches_are_sweeps(["++hparams_search=lr_wd"])[-1] == "--multirun"
    assert searches_are_sweeps(["~hparams_search"]) == ["~hparams_search"]
    assert searches_are_sweeps(["hparams_search=null"]) == ["hparams_search=null"]
    # A line that only prints, and a process joining a trial's run (its DDP job run again in its own process, with
    # the trial's overrides), start no search.
    assert searches_are_sweeps(["hparams_search=lr_wd", "--cfg", "hydra"]) == ["hparams_search=lr_wd", "--cfg", "hydra"]
    joining = ["hparams_search=lr_wd", "optim.lr=0.01", "hydra.run.dir=/x/trial_0", "hydra.output_subdir=null"]
    assert searches_are_sweeps(joining) == joining


def test_a_commands_numbers_may_come_from_the_environment_as_strings_of_digits() -> None:
    from fmnist_lightning.config.checks import check_values, positive, whole

    checks = (whole("port", 0, "a TCP port in 0-65535", "port=7860"), positive("atol", "a tolerance > 0", "atol=1e-4"))
    check_values(OmegaConf.create({"port": "8080", "atol": "1e-4"}), checks)  # as ${oc.env:PORT} resolves
    with pytest.raises(ConfigError, match=r"^port='80x' is str, not an integer: it must be a TCP port in 0-65535"):
        check_values(OmegaConf.create({"port": "80x", "atol": 1e-4}), checks)
    with pytest.raises(ConfigError, match=r"^atol=0 is impossible: it must be a tolerance > 0, e.g. atol=1e-4$"):
        check_values(OmegaConf.create({"port": 80, "atol": 0}), checks)
    with pytest.raises(ConfigError, match=r"^port=True is bool, not an integer"):
        check_values(OmegaConf.create({"port": True, "atol": 1e-4}), checks)
