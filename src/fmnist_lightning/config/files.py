"""Where the project's files live: the ``conf/`` directory, and the files of a run directory.

Every reader and writer of a run directory (training, resume, the sweep summary, DDP jobs,
evaluate) takes the file names from here, so a name is spelled once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def project_root() -> Path:
    """The checkout holding ``pyproject.toml`` (editable install), else the working directory."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


CONF_DIR = project_root() / "conf"

# The files of a run directory (outputs/runs/<time>/, or a job of outputs/multirun/<time>/).
METRICS_FILE = "metrics.json"  # final metrics of a run that finished (or was pruned)
STATUS_FILE = "status.json"  # written instead when the run failed: the one-line error
RUN_FILE = "run.json"  # where the run came from: code, packages, machine, precision, times (training.provenance)
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT_NAME = "last"  # the filename of conf/callbacks' last_checkpoint and of the interrupt checkpoint
LAST_CHECKPOINT = Path(CHECKPOINT_DIR) / f"{LAST_CHECKPOINT_NAME}.ckpt"
HYDRA_OVERRIDES = Path(".hydra") / "overrides.yaml"
SWEEP_FILE = "multirun.yaml"  # in a sweep's directory, beside its jobs: the sweep's composed config
HYDRA_CONFIG = Path(".hydra") / "hydra.yaml"  # Hydra's own settings of the run, its hydra.* overrides among them
# ``log.info(..., extra=FILE_ONLY)``: a record for the run's train.log only. The console shows a short header
# instead (training.run_header); cli.hydra_entry.route_lightning_logs keeps such records off it (cli.console).
FILE_ONLY = {"file_only": True}


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` beside ``path`` and rename it over: a reader (or a crash) never sees half a file.

    Every text file the project writes goes through here, so a secret (a password in a URL, a value of a
    key named like a secret: ``config.masking``) is masked in all of them, whatever code produced the text.
    """
    from fmnist_lightning.config.masking import mask_text  # here: masking imports Hydra, files.py stays light

    text = mask_text(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Named by the process: two writers of one file (ranks of a job on a shared filesystem) never share a temporary.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """``data`` as indented, key-sorted JSON, written atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# What a user can do about a run's .hydra/ file that is cut short or edited by hand: Hydra wrote it at the
# run's start, and nothing else holds the run's composition.
UNREADABLE_RUN_FILE = (
    "restore the run's .hydra/ from a backup, or start a new run (without resume=, or with another hydra.run.dir)"
)


def read_run_yaml(path: Path, expect: type[list] | type[dict], fix: str) -> Any:
    """A YAML file of a run directory (Hydra's ``.hydra/*.yaml``, a sweep's ``multirun.yaml``) as OmegaConf.

    A file cut short or edited by hand raises ``ConfigError`` naming the file, what is wrong with it and
    ``fix`` (what the user can do), instead of YAML's own parser error, which names neither. ``expect``
    is the top-level shape the file must have: OmegaConf reads a bare word as a mapping of one key.
    """
    # Imported here, as in write_text_atomic: files.py stays light for the modules that only need names.
    import yaml
    from omegaconf import ListConfig, OmegaConf

    from fmnist_lightning.errors import ConfigError

    try:
        loaded = OmegaConf.load(path)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML ({where}{err.problem or err.context}); {fix}") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not readable YAML ({type(err).__name__}); {fix}") from err
    if isinstance(loaded, ListConfig) != (expect is list):
        shape = "a list" if expect is list else "a mapping"
        raise ConfigError(f"{path} does not hold {shape}, as Hydra writes it; {fix}")
    return loaded
