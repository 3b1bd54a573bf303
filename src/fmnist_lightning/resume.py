"""Command-line arguments that continue an earlier run in place, and the guard that keeps runs apart.

``resume=<run dir>`` becomes the run's own overrides (from ``.hydra/overrides.yaml``)
plus ``hydra.run.dir=<run dir>`` and ``ckpt_path=<run dir>/checkpoints/last.ckpt``:
the same composition, the same directory, the same TensorBoard and CSV logs. This
happens before Hydra starts, because Hydra fixes the run directory and writes its
config files there before the task function runs. The resumed run's Hydra files
go to ``.hydra/resumed_<time>`` so the original ones stay as they were.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from fmnist_lightning.errors import ConfigError

RESUME = "resume"
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
MULTIRUN_FLAGS = ("-m", "--multirun")


def _key(arg: str) -> str:
    return arg.partition("=")[0].lstrip("+~")


def resume_overrides(run_dir: str | Path, extra: Sequence[str] = ()) -> list[str]:
    """The overrides that continue the run in ``run_dir``; ``extra`` overrides win (e.g. more epochs)."""
    run = Path(run_dir).expanduser().resolve()
    overrides_file = run / ".hydra" / "overrides.yaml"
    checkpoint = run / LAST_CHECKPOINT
    if not overrides_file.is_file():
        raise ConfigError(f"resume={run_dir}: no .hydra/overrides.yaml there; pass the directory of an earlier run")
    if not checkpoint.is_file():
        raise ConfigError(
            f"resume={run_dir}: no {LAST_CHECKPOINT} there (the run stopped before its first checkpoint); "
            "start it again instead"
        )
    original = [str(arg) for arg in OmegaConf.load(overrides_file)]
    replaced = {_key(arg) for arg in extra} | {"ckpt_path"}
    kept = [arg for arg in original if _key(arg) not in replaced]
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return [
        *kept,
        *extra,
        f"ckpt_path={checkpoint}",
        f"hydra.run.dir={run}",
        f"hydra.output_subdir=.hydra/resumed_{stamp}",
    ]


def prepare_argv(argv: Sequence[str]) -> list[str]:
    """``sys.argv[1:]`` with ``resume=`` expanded; refuses to start a new run inside an existing one."""
    args = list(argv)
    resume = [a for a in args if _key(a) == RESUME]
    if resume:
        if any(a in MULTIRUN_FLAGS for a in args):
            raise ConfigError("resume= continues one run; drop -m/--multirun")
        run_dir = resume[-1].partition("=")[2]
        if not run_dir:
            raise ConfigError("resume= needs a run directory, e.g. resume=outputs/runs/2026-01-01_12-00-00_000000")
        return resume_overrides(run_dir, [a for a in args if _key(a) != RESUME])
    if "hydra.output_subdir=null" in args or os.environ.get("LOCAL_RANK") not in (None, "0"):
        # A process joining a run that already started: a DDP rank Lightning launched, or a multirun's
        # DDP job re-run in its own process (distributed.py). Both pass the run's own directory with
        # hydra.output_subdir=null, so they write no Hydra files there.
        return args
    for arg in args:
        if _key(arg) != "hydra.run.dir":
            continue
        existing = arg.partition("=")[2].strip("\"'")
        if (Path(existing).expanduser() / ".hydra").exists():
            raise ConfigError(
                f"{existing} already holds a run; a new run never writes into it. "
                f"Continue it with resume={existing}, or pick another hydra.run.dir"
            )
    return args
