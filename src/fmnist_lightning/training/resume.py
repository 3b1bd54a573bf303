"""Command-line arguments that continue an earlier run in place, and the guard that keeps runs apart.

``resume=<run dir>`` becomes the run's own overrides (from ``.hydra/overrides.yaml``, and the
``hydra.*`` ones it needs again from ``.hydra/hydra.yaml``: its config search path, logging, chdir)
plus ``hydra.run.dir=<run dir>`` and ``ckpt_path=<run dir>/checkpoints/last.ckpt``:
the same composition, the same directory, the same TensorBoard and CSV logs. This
happens before Hydra starts, because Hydra fixes the run directory and writes its
config files there before the task function runs. The resumed run's Hydra files
go to ``.hydra/resumed_<time>`` so the original ones stay as they were.

A run stopped before its first checkpoint has nothing to continue from: it starts over
in the same directory, its partial files moved to ``attempts/<n>/`` first (nothing is
deleted). ``resume=auto`` with a fixed ``hydra.run.dir`` makes one command safe to run
again and again, as a scheduler's requeue runs it: a new run where there is none, the
run continued where it has a checkpoint, nothing where it is complete.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.command_line import is_multirun, override_key, prints_only, split_flags
from fmnist_lightning.config.files import (
    HYDRA_CONFIG,
    HYDRA_OVERRIDES,
    LAST_CHECKPOINT,
    METRICS_FILE,
    UNREADABLE_RUN_FILE,
    read_run_yaml,
)
from fmnist_lightning.config.masking import holds_masked_secret
from fmnist_lightning.config.output_dirs import given_dir, refuse_existing_output
from fmnist_lightning.config.processes import is_first_task, joins_a_started_run, scheduler_restarts
from fmnist_lightning.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

RESUME = "resume"
AUTO = "auto"
ATTEMPTS = "attempts"
# The hydra.* overrides a resume takes from the run (.hydra/hydra.yaml; overrides.yaml holds only the job's): where
# its configs were found (a user's own presets through hydra.searchpath) and how its job ran and logged. The run's
# directory, output folder and mode are the resume's own, and a launcher or sweeper has no place in one run.
CARRIED_HYDRA_KEYS = (
    "hydra.searchpath",
    "hydra.job.chdir",
    "hydra.verbose",
    "hydra/job_logging",
    "hydra/hydra_logging",
)


class RunComplete(Exception):
    """``resume=`` named a run that has nothing left to train; the message says so (exit 0)."""


def has_checkpoint(run: Path) -> bool:
    return any((run / LAST_CHECKPOINT).parent.glob("*.ckpt"))


def set_aside(run: Path, keep: Sequence[str] = ()) -> Path:
    """Move everything in ``run`` (earlier attempts and ``keep`` aside) into ``run/attempts/<n>``, the next free n."""
    attempts = run / ATTEMPTS
    taken = [int(p.name) for p in attempts.glob("*") if p.name.isdigit()] if attempts.is_dir() else []
    target = attempts / str(max(taken, default=0) + 1)
    target.mkdir(parents=True)
    for entry in run.iterdir():
        if entry.name != ATTEMPTS and entry.name not in keep:
            entry.rename(target / entry.name)
    return target


def _start_over(run: Path, overrides: list[str], runs_job: bool = True) -> list[str]:
    """The run's own command again, in its own directory, its partial files set aside first (unless
    ``runs_job`` is false: a command line that only prints, ``--cfg job``, moves and refuses nothing)."""
    if not runs_job:
        return [*overrides, f"hydra.run.dir={run}"]
    if (run / METRICS_FILE).is_file():
        raise RunComplete(
            f"{run} is complete (it has {METRICS_FILE}, and no checkpoint to train on from); "
            "its results are left as they are"
        )
    if not is_first_task():
        return [*overrides, f"hydra.run.dir={run}"]  # the job's first task sets the files aside
    moved = set_aside(run)
    message = f"{run} stopped before its first checkpoint: its files are kept in {moved}; starting it over in place"
    log.warning("%s", message)
    print(message, file=sys.stderr)
    return [*overrides, f"hydra.run.dir={run}"]


def readable_checkpoint(run: Path) -> Path:
    """``last.ckpt``, or, if it cannot be read (a crash mid-write on a filesystem without atomic rename,
    a truncated copy), the newest readable checkpoint of the run, with a warning naming both."""
    # Imported here: prepare_argv runs for every command line, --help included, which must answer
    # without the seconds-long import of Lightning and torch.
    from fmnist_lightning.training.checkpoint_files import load_checkpoint

    last = run / LAST_CHECKPOINT
    others = sorted((p for p in last.parent.glob("*.ckpt") if p != last), key=lambda p: p.stat().st_mtime, reverse=True)
    if not last.is_file() and not others:
        raise ConfigError(
            f"resume={run}: no checkpoint in {last.parent} (the run stopped before its first checkpoint); "
            "start it again instead"
        )
    failures = []
    for candidate in ([last] if last.is_file() else []) + others:
        try:
            load_checkpoint(candidate)
        except CheckpointError as exc:
            failures.append(f"{candidate.name}: {exc}")
            continue
        if candidate != last:
            reason = failures[0] if failures else f"{last.name}: missing"
            message = f"{last} cannot be read ({reason}); resuming from {candidate}, the newest readable checkpoint"
            # Printed, not logged: the command line is read before Hydra sets up logging, whose absence would
            # print a logged line a second time (Python's last-resort handler).
            print(f"warning: {message}", file=sys.stderr)
        return candidate
    raise ConfigError(
        f"resume={run}: no readable checkpoint in {last.parent} ({'; '.join(failures)}); start the run again"
    )


def _requested(extra: Sequence[str], key: str) -> int | None:
    values = [arg.partition("=")[2] for arg in extra if override_key(arg) == key]
    try:
        return int(values[-1]) if values else None
    except ValueError:
        return None  # not a number: left to the config checks of the resumed run


def _longer(requested: int | None, done: Any) -> bool:
    """Whether a budget of ``requested`` (-1: none) asks for more than the run was given (``done``)."""
    if requested is None or requested == done:
        return False
    if requested == -1:
        return True
    return done is not None and done != -1 and requested > done


def finished_message(run: Path, checkpoint: Path, extra: Sequence[str]) -> str | None:
    """What to tell the user when the run completed and ``extra`` asks for no more training; else None.

    Complete means: ``metrics.json`` was written from the state ``checkpoint`` holds (same global
    step), so fitting again would only re-test and overwrite the results with a poorer copy.
    """
    from fmnist_lightning.training.checkpoint_files import load_checkpoint, run_config  # as in readable_checkpoint

    metrics_file = run / METRICS_FILE
    if not metrics_file.is_file():
        return None
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError):
        return None
    state = load_checkpoint(checkpoint)
    if "global_step" in metrics:
        if metrics["global_step"] != state.get("global_step"):
            return None
    elif metrics_file.stat().st_mtime < checkpoint.stat().st_mtime:
        return None  # written by an older version: the newer checkpoint means training went on after it
    trainer = run_config(state).get("trainer", {})
    if any(_longer(_requested(extra, f"trainer.{key}"), trainer.get(key)) for key in ("max_epochs", "max_steps")):
        return None
    result = f", test/acc {metrics['test/acc']:.4f}" if isinstance(metrics.get("test/acc"), (int, float)) else ""
    return (
        f"{run} is complete ({metrics.get('epochs', '?')} epochs{result}); its results are left as they are. "
        f"To train it longer: resume={run} trainer.max_epochs=<more than {trainer.get('max_epochs')}>"
    )


def run_overrides(run: Path) -> list[str]:
    """The run's own command-line overrides, as Hydra saved them in ``.hydra/overrides.yaml``."""
    return [str(arg) for arg in read_run_yaml(run / HYDRA_OVERRIDES, list, UNREADABLE_RUN_FILE)]


def hydra_settings(run: Path) -> DictConfig:
    """The run's ``.hydra/hydra.yaml`` (Hydra's own settings: its ``hydra.*`` overrides, its options), or empty."""
    hydra_file = run / HYDRA_CONFIG
    return OmegaConf.create(read_run_yaml(hydra_file, dict, UNREADABLE_RUN_FILE) if hydra_file.is_file() else {})


def carried_hydra_overrides(run: Path) -> list[str]:
    """The run's own ``hydra.*`` overrides that its resume needs again (``CARRIED_HYDRA_KEYS``), in their order."""
    words = OmegaConf.select(hydra_settings(run), "hydra.overrides.hydra", default=None) or []
    return [
        str(word)
        for word in words
        if any(
            override_key(str(word)) == key or override_key(str(word)).startswith(f"{key}.")
            for key in CARRIED_HYDRA_KEYS
        )
    ]


def resume_overrides(run_dir: str | Path, extra: Sequence[str] = (), runs_job: bool = True) -> list[str]:
    """The overrides that continue the run in ``run_dir``; ``extra`` overrides win (e.g. more epochs).
    ``runs_job=False`` (a line that only prints its config) leaves the run as it is, complete or not.

    Raises ``RunComplete`` when the run has finished and ``extra`` asks for no more training.
    """
    run = Path(run_dir).expanduser().resolve()
    overrides_file = run / HYDRA_OVERRIDES
    if not run.is_dir():
        raise ConfigError(f"resume={run_dir}: no such directory; pass the directory of an earlier run")
    if not overrides_file.is_file():
        raise ConfigError(f"resume={run_dir}: no .hydra/overrides.yaml there; pass the directory of an earlier run")
    original = [*carried_hydra_overrides(run), *run_overrides(run)]
    replaced = {override_key(arg) for arg in extra} | {"ckpt_path"}
    masked = [override_key(arg) for arg in original if holds_masked_secret(arg) and override_key(arg) not in replaced]
    if masked:
        # The run's files keep secrets masked (config.masking): the real value must come from the user again.
        raise ConfigError(
            f"resume={run_dir}: {masked[0]} held a secret, which the run's files keep as ***; pass it again: "
            f"resume={run_dir} {masked[0]}=<value>, or write it as ${{oc.env:VARIABLE}} so that it never needs retyping"
        )
    kept = [arg for arg in original if override_key(arg) not in replaced]
    if not has_checkpoint(run):
        return _start_over(run, [*kept, *extra], runs_job)
    refuse_another_optimizer(run, run_dir, extra)
    checkpoint = readable_checkpoint(run)
    message = finished_message(run, checkpoint, extra) if runs_job else None
    if message:
        raise RunComplete(message)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return [
        *kept,
        *extra,
        f"ckpt_path={checkpoint}",
        f"hydra.run.dir={run}",
        f"hydra.output_subdir=.hydra/resumed_{stamp}",
    ]


def refuse_another_optimizer(run: Path, run_dir: str | Path, extra: Sequence[str]) -> None:
    """Refuse ``optim=``/``sched=`` options other than the run's on a resume of its checkpoint, which restores the
    optimizer's and scheduler's state (``training.resumed_settings`` holds their values to the same rule). Said
    here, before composing: the run's own ``optim.*`` overrides may not even compose with another option."""
    choices: dict[str, Any] = OmegaConf.select(hydra_settings(run), "hydra.runtime.choices", default=None) or {}
    for word in extra:
        group, _, option = word.partition("=")
        if group == "ema" and option.strip("\"'") == "none" and choices.get("ema", "none") != "none":
            # Lightning's weight averaging saves the average as the checkpoint's weights, the trained ones beside
            # them for its own resume: without the callback, training would go on from the average.
            raise ConfigError(
                f"resume={run_dir}: ema=none would train on from the average its checkpoint holds as the network's "
                f"weights (the trained ones are kept for ema={choices['ema']}); drop ema=none to continue the run"
            )
        if group in ("optim", "sched") and group in choices and option.strip("\"'") != choices[group]:
            raise ConfigError(
                f"resume={run_dir}: {group}={option} would not take effect: a resumed run continues the optimizer and "
                f"schedule its checkpoint holds ({group}={choices[group]}; Lightning restores their state); drop "
                f"{group}={option} to continue it, or start a new run for new settings"
            )


def auto_resume(args: Sequence[str], runs_job: bool = True) -> list[str]:
    """``resume=auto``: ``args`` as a new run in their ``hydra.run.dir`` where no run is yet; else that run
    continued (``args`` that differ from its own overrides win, e.g. more epochs), or left alone if complete."""
    run_dirs = [a.partition("=")[2].strip("\"'") for a in args if override_key(a) == "hydra.run.dir"]
    if not run_dirs:
        raise ConfigError(
            "resume=auto needs the run's own directory, the same each time the command runs: add "
            "hydra.run.dir=<dir>, e.g. hydra.run.dir=outputs/runs/job-$SLURM_JOB_ID"
        )
    named = given_dir(args, "hydra.run.dir")
    if named is None:
        raise ConfigError(
            f"resume=auto needs hydra.run.dir to name its directory before the config is composed, and "
            f"{run_dirs[-1]} names a config key: use a path, or ${{oc.env:VARIABLE}} in it"
        )
    run = Path(named).expanduser().resolve()
    rest = [a for a in args if override_key(a) != "hydra.run.dir"]
    if not (run / ".hydra").exists():
        return [*rest, f"hydra.run.dir={run}"]
    if not (run / HYDRA_OVERRIDES).is_file() or not has_checkpoint(run):
        # Stopped before its first checkpoint, perhaps while Hydra wrote its files (a kill can leave
        # overrides.yaml empty): nothing to continue from, so the command's own words start it over.
        return _start_over(run, rest, runs_job)
    original = set(run_overrides(run))
    overrides = resume_overrides(run, [a for a in rest if a not in original], runs_job)
    checkpoint = [a.partition("=")[2] for a in overrides if override_key(a) == "ckpt_path"]
    if checkpoint and runs_job:
        restart = (
            f"SLURM job {os.environ.get('SLURM_JOB_ID')}, start {scheduler_restarts() + 1}: "
            if scheduler_restarts()
            else ""
        )
        print(f"{restart}continuing the run in {run} from {checkpoint[-1]}", file=sys.stderr, flush=True)
    return overrides


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """``sys.argv[1:]`` with ``resume=`` expanded; refuses to start a new run inside an existing one."""
    args = list(argv)
    resume = [a for a in args if override_key(a) == RESUME]
    if resume:
        if is_multirun(args):
            raise ConfigError("resume= continues one run; drop -m/--multirun")
        run_dir = resume[-1].partition("=")[2]
        if not run_dir:
            raise ConfigError("resume= needs a run directory, e.g. resume=outputs/runs/2026-01-01_12-00-00_000000")
        # The run's words join the user's overrides; Hydra's flags (`--cfg job`) go after the whole run of them.
        rest, flags = split_flags([a for a in args if override_key(a) != RESUME])
        # A line that only prints (--cfg job, --info, --help) sets no file aside and prints even a finished run's.
        runs_job = not prints_only(flags)
        resumed = auto_resume(rest, runs_job) if run_dir == AUTO else resume_overrides(run_dir, rest, runs_job)
        return [*resumed, *flags]
    fixed_dir = any(override_key(a) == "hydra.run.dir" for a in args)
    if scheduler_restarts() and fixed_dir and not is_multirun(args):
        # The job's command again, started by SLURM after a requeue: the run in its directory goes on.
        rest, flags = split_flags(args)
        return [*auto_resume(rest), *flags]
    # A task of a multi-node job after the first (srun) trains in the run its first task may have started already.
    if joins_a_started_run(args) or not is_first_task():
        return args
    # A restarted sweep's jobs continue in place (training.requeue).
    refuse_existing_output(args, "a new run", "continue it with resume={dir}, or ", restarted=scheduler_restarts() > 0)
    return args
