"""How every command starts: its parsing (Hydra's, or argparse's for ``summarize``), its ``--help``, and its end
on a failure: one ``error:`` line, exit code 2 for bad input and 1 for anything else, and a quiet exit when the
reader of its output went away (``fmnist --help | head``). A command module is its body and one call here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import hydra
from omegaconf import DictConfig

from fmnist_lightning.cli.exits import exit_on_closed_output, exit_on_interrupt, exit_with_error, exit_with_failure
from fmnist_lightning.cli.hydra_entry import quiet_lightning_info, route_lightning_logs, run_hydra
from fmnist_lightning.config.command_line import first_override, override_key, prints_only, split_flags
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import MAIN_ARGS
from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.config.output_dirs import refuse_existing_output
from fmnist_lightning.config.processes import scheduler_restarts
from fmnist_lightning.errors import ConfigError, FmnistError

T = TypeVar("T")
Arguments = Callable[[list[str]], list[str]]


def guarded(body: Callable[[Any], T], value: Any, where: Callable[[], Path | None]) -> T:
    """``body(value)``, every failure ending the command: bad input (an ``FmnistError``) as one ``error:`` line
    and exit 2; anything else as one line too, exit 1, with the traceback in ``where()`` (a bug report's file)."""
    try:
        return body(value)
    except BrokenPipeError:
        exit_on_closed_output()
    except KeyboardInterrupt:
        exit_on_interrupt()
    except FmnistError as exc:
        exit_with_error(exc)
    except Exception as exc:  # noqa: BLE001 - every failure of an entry point is one error: line
        exit_with_failure(exc, where())


def hydra_output_dir() -> Path | None:
    """The running Hydra job's output directory (where its error.log goes), if Hydra has started one."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def hydra_command(
    config_name: str,
    body: Callable[[DictConfig], Any],
    *,
    arguments: Arguments | None = None,
    guards_output: bool = False,
    lightning: bool = False,
    quiet_trainers: bool = False,
) -> Callable[[], None]:
    """The entry point of a command on ``conf/<config_name>.yaml``: Hydra parses the command line and prints
    ``--help`` (the config's ``hydra/help``), and Hydra's own errors end as one line (``run_hydra``).

    ``arguments`` rewrites the command line before Hydra reads it (e.g. ``model=<file>`` into a key that is not a
    config group). A command never writes into an earlier run's or sweep's directory (``config.output_dirs``);
    ``guards_output``: its ``arguments`` refuse one themselves (training's, which let ``resume=`` in).
    ``lightning``: route Lightning's log records through Hydra's handlers before the body (for bodies that import
    Lightning at once); ``quiet_trainers``: also drop the device summary every Trainer logs.
    """

    def run(cfg: DictConfig) -> Any:
        if lightning or quiet_trainers:
            route_lightning_logs()
        if quiet_trainers:
            quiet_lightning_info()
        return body(cfg)

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, **MAIN_ARGS)
    def main(cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # A job of a sweep raises to its launcher, which records it as that job's failure (an Optuna trial
            # FAIL); the sweep goes on, and ends as one line if it cannot (run_hydra).
            return run(cfg)
        return guarded(run, cfg, hydra_output_dir)

    def cli() -> None:
        if arguments is not None:
            sys.argv[1:] = guarded(arguments, sys.argv[1:], lambda: None)
        # After the rewrite: resume= puts the run's settings before the user's flags, wherever those were.
        guarded(check_flags, sys.argv[1:], lambda: None)
        if not guards_output:
            guarded(lambda args: refuse_new_output_in_old(args, command_name(body)), sys.argv[1:], lambda: None)
        # Hydra names the job for the module of the function it decorates, which is this one for every command.
        sys.argv[1:] = with_settings({"hydra.job.name": command_name(body)})(sys.argv[1:])
        run_hydra(main)
        end_a_sweep_that_failed_whole()

    return cli


def end_a_sweep_that_failed_whole() -> None:
    """A sweep none of whose jobs completed ends as a failed command: one ``error:`` line, exit 2 when every job's
    failure was bad input, else 1. (A sweep with some jobs completed exits 0: its summary lists the failures.)"""
    from fmnist_lightning.results.sweep_callback import FAILED_SWEEP

    if FAILED_SWEEP:
        print(
            mask_text(
                f"error: every job of the sweep failed ({FAILED_SWEEP['jobs']}); the first, {FAILED_SWEEP['first']} "
                f"(all of them in {FAILED_SWEEP['summary']})"
            ),
            file=sys.stderr,
        )
        raise SystemExit(2 if FAILED_SWEEP["bad_input"] else 1)


def check_flags(args: list[str]) -> None:
    """The flags as Hydra's own parser will read them, so that a mistyped one is one ``error:`` line rather than
    argparse's usage lines (Hydra's parser exits on its own)."""
    from hydra._internal.utils import get_args_parser  # private: the parser hydra.main itself builds

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        unknown = parser.parse_known_args(args)[1]
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{exc}; see --help for the flags") from None
    if any(not word.startswith("-") for word in unknown):
        # Hydra's parser takes the settings as one run of words: those after a flag that follows them are left over.
        raise ConfigError(
            f"unrecognized arguments: {' '.join(unknown)}; put the flags (-m, --cfg, ...) before the settings, e.g. "
            "python -m fmnist_lightning -m optim.lr=0.1,0.01 trainer.max_epochs=3"
        )
    if unknown:
        raise ConfigError(
            f"unrecognized arguments: {' '.join(unknown)}; settings are key=value with no dashes (e.g. "
            "trainer.max_epochs=3), flags are those --help lists"
        )


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors end as every command's bad input does: one ``error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; see {self.prog} --help")


def refuse_new_output_in_old(args: list[str], name: str) -> None:
    """A command's guard against writing into an earlier run's or sweep's directory (``config.output_dirs``),
    except on a line that only prints, and on a scheduler's restart of the same job, whose directory it is."""
    if prints_only(split_flags(args)[1]) or scheduler_restarts():
        return
    refuse_existing_output(args, f"the {name} command", "")


def command_name(body: Callable[..., Any]) -> str:
    """A command's name, for ``hydra.job.name``: its module's (``evaluate``), ``train`` for the package's own."""
    module = body.__module__
    if module == "__main__":  # run as ``python -m fmnist_lightning.<command>``: the module's own name is its spec's
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else module
    name = module.rpartition(".")[2]
    return "train" if name == "__main__" else name


def with_settings(settings: dict[str, str]) -> Arguments:
    """A command line with the command's own Hydra settings (its output directory, its help) added, unless the
    user named them: for commands on the training config, which is ``fmnist``'s."""

    def arguments(args: list[str]) -> list[str]:
        given = {override_key(arg) for arg in split_flags(args)[0]}
        ours = [f"{key}={value}" for key, value in settings.items() if key not in given]
        # Hydra's argparse takes the overrides as one run of words, wherever the flags are: ours join its front.
        first = first_override(args)
        return [*args[:first], *ours, *args[first:]]

    return arguments


def argparse_command(
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    body: Callable[[argparse.Namespace], Any],
    where: Callable[[argparse.Namespace], Path | None] = lambda _: None,
) -> Callable[..., None]:
    """The entry point ``cli(argv=None)`` of a command on argparse (its ``--help`` is argparse's; a usage error is one
    ``error:`` line and exit 2 with ``OneLineArgumentParser``); the body's failures end as a Hydra command's do, the
    traceback in ``where(args)``."""

    def cli(argv: Sequence[str] | None = None) -> None:
        args = guarded(parse, argv, lambda: None)
        guarded(body, args, lambda: where(args))

    return cli
