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
