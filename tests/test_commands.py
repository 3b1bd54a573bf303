"""Every command starts one way (``cli.commands``): Hydra's or argparse's parsing and help, one ``error:`` line with
exit code 2 for bad input and 1 for a failure, its traceback in ``error.log``, and one console script each."""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fmnist_lightning.cli.commands import argparse_command, guarded, with_settings
from fmnist_lightning.cli.hydra_entry import run_hydra
from fmnist_lightning.config.files import project_root
from fmnist_lightning.errors import ConfigError

PACKAGE = project_root() / "src" / "fmnist_lightning"
# The top-level modules that are not commands: the package's errors, and train(), which __main__ runs.
NOT_COMMANDS = {"__init__", "errors", "train"}


def command_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in NOT_COMMANDS)


def entry_of(module: str) -> str | None:
    """The helper a module's ``cli`` comes from (``cli = hydra_command(...)``), or None."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for node in tree.body:
        named = isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "cli" for t in node.targets)
        if named and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
            return node.value.func.id
    return None


@pytest.mark.parametrize("module", command_modules())
def test_every_command_starts_through_the_entry_helper(module: str) -> None:
    assert entry_of(module) in ("hydra_command", "argparse_command"), f"{module}.py builds its own entry point"


def test_every_command_has_a_console_script_on_its_cli() -> None:
    scripts = tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]["scripts"]
    targets = set(scripts.values())
    expected = {f"fmnist_lightning.{module}:cli" for module in command_modules()}
    assert targets == expected


def test_no_command_imports_torch_or_lightning_before_it_has_parsed_its_command_line() -> None:
    # --help and a config error answer in about a second (torch's import alone takes 2-7 s on 2 cores), and a
    # broken torch install fails inside the command's guard, as one error line.
    imports = "; ".join(f"import fmnist_lightning.{module}" for module in command_modules())
    probe = f"import sys; {imports}; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=project_root())
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_bad_input_is_one_error_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def body(_: object) -> None:
        raise ConfigError("unknown option optim=adamx; choose one of adamw, sgd")

    with pytest.raises(SystemExit) as exit_:
        guarded(body, None, lambda: None)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: unknown option optim=adamx; choose one of adamw, sgd\n"


def test_a_failure_is_one_line_and_exit_1_with_its_traceback_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def body(_: object) -> None:
        raise RuntimeError("CUDA error: device-side assert triggered")

    with pytest.raises(SystemExit) as exit_:
        guarded(body, None, lambda: tmp_path)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: RuntimeError: CUDA error: device-side assert triggered")
    assert f"traceback in {tmp_path / 'error.log'}" in err[0]
    assert 'raise RuntimeError("CUDA error' in (tmp_path / "error.log").read_text()


def test_a_failure_whose_folder_cannot_take_the_traceback_keeps_it_elsewhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The folder of a failure may be what failed (read only, a full disk); here error.log cannot be a file there.
    (tmp_path / "error.log").mkdir()

    def body(_: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(SystemExit) as exit_:
        guarded(body, None, lambda: tmp_path)
    assert exit_.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: OSError: [Errno 28] No space left on device"), err
    saved = Path(err[0].split("traceback in ", 1)[1].rstrip(")"))
    assert saved.parent != tmp_path and "No space left on device" in saved.read_text()


def test_a_library_message_of_several_lines_is_joined_into_one(capsys: pytest.CaptureFixture[str]) -> None:
    def body(_: object) -> None:
        raise ConfigError("model=x failed to build (Error in call to target:\nTypeError: bad width\n)")

    with pytest.raises(SystemExit):
        guarded(body, None, lambda: None)
    assert (
        capsys.readouterr().err == "error: model=x failed to build (Error in call to target:; TypeError: bad width; )\n"
    )


@pytest.mark.parametrize("entry", ["guarded", "run_hydra"])
def test_ctrl_c_outside_a_trainer_is_one_line_and_exit_130(entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    # A checkpoint loading, an export, the download: Lightning turns Ctrl-C into an exit only inside its Trainer.
    def body(_: object = None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        guarded(body, None, lambda: None) if entry == "guarded" else run_hydra(body)
    assert exit_.value.code == 130
    assert capsys.readouterr().err == "error: interrupted (Ctrl-C)\n"


def test_a_command_value_passes_through() -> None:
    assert guarded(lambda x: x + 1, 41, lambda: None) == 42


def test_own_settings_are_added_unless_the_user_named_them() -> None:
    arguments = with_settings({"hydra.run.dir": "out/x", "hydra/help": "augment"})
    assert arguments(["aug=strong", "--cfg", "job"]) == [
        "hydra.run.dir=out/x",
        "hydra/help=augment",
        "aug=strong",
        "--cfg",
        "job",
    ]
    assert arguments(["hydra.run.dir=mine"]) == ["hydra/help=augment", "hydra.run.dir=mine"]
    # Hydra's argparse takes the overrides as one run of words: ours join it, whichever side the flags are on.
    assert arguments(["--multirun", "optim.lr=0.1,0.2"]) == [
        "--multirun",
        "hydra.run.dir=out/x",
        "hydra/help=augment",
        "optim.lr=0.1,0.2",
    ]
    # With no override, ours come first: after `--info` they would be taken for its optional value.
    assert arguments(["--cfg", "job"]) == ["hydra.run.dir=out/x", "hydra/help=augment", "--cfg", "job"]
    assert arguments(["--info"]) == ["hydra.run.dir=out/x", "hydra/help=augment", "--info"]
    # A flag's value is never an override, whatever it looks like: it names no key and splits no run.
    assert arguments(["-p", "hydra.run.dir", "--cfg", "hydra"]) == [
        "hydra.run.dir=out/x",
        "hydra/help=augment",
        "-p",
        "hydra.run.dir",
        "--cfg",
        "hydra",
    ]
    assert arguments(["-cd", "~/conf", "a=1"]) == ["-cd", "~/conf", "hydra.run.dir=out/x", "hydra/help=augment", "a=1"]
    assert arguments(["--config-dir=conf", "~a"]) == [
        "--config-dir=conf",
        "hydra.run.dir=out/x",
        "hydra/help=augment",
        "~a",
    ]


def test_an_argparse_command_ends_like_a_hydra_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def parse(argv: list[str] | None) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="probe")
        parser.add_argument("path", type=Path)
        return parser.parse_args(argv)

    def body(args: argparse.Namespace) -> None:
        if not args.path.exists():
            raise ConfigError(f"{args.path} does not exist: pass a sweep directory")
        raise ValueError("damaged summary")

    cli = argparse_command(parse, body, where=lambda args: args.path)
    with pytest.raises(SystemExit) as exit_:
        cli([str(tmp_path / "nowhere")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'} does not exist: pass a sweep directory\n"
    with pytest.raises(SystemExit) as exit_:
        cli([str(tmp_path)])
    assert exit_.value.code == 1 and (tmp_path / "error.log").is_file()
    with pytest.raises(SystemExit) as exit_:
        cli([])  # argparse's own usage error
    assert exit_.value.code == 2


@pytest.mark.parametrize(
    ("command", "given", "name"),
    [
        ("fmnist_lightning", ["model=lenet"], "train"),
        ("fmnist_lightning.evaluate", [], "evaluate"),
        ("fmnist_lightning.augment", ["aug=strong"], "augment"),
        ("fmnist_lightning.augment", ["hydra.job.name=mine"], "mine"),
    ],
)
def test_a_hydra_job_is_named_for_its_command(command: str, given: list[str], name: str) -> None:
    # ${hydra:job.name} in a user's config; Hydra itself would name every command's job for cli/commands.py. The
    # settings a command adds must not follow the flags either (`aug=strong --cfg hydra`).
    from conftest import run_cli

    result = run_cli("-m", command, *given, "--cfg", "hydra", "--package", "hydra.job")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"name: {name}\n" in result.stdout


def test_a_failure_outside_a_job_keeps_its_traceback_in_the_sweeps_folder(tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from fmnist_lightning.cli.hydra_entry import failure_folder
    from fmnist_lightning.config.files import CONF_DIR
    from fmnist_lightning.config.hydra_compat import INIT_ARGS

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
            cfg = compose("config", overrides=[f"hydra.sweep.dir={tmp_path / 'sweep'}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    try:
        assert failure_folder() is None  # Hydra has not made it: the traceback goes to a temporary folder
        (tmp_path / "sweep").mkdir()
        assert failure_folder() == tmp_path / "sweep"
    finally:
        HydraConfig.instance().cfg = None  # no multirun config left behind for the worker's next test
