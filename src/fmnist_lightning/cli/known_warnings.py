"""Warnings and log messages known to be harmless in this project, filtered by every entry point and by the
test suite alike.

Each is matched by its message (and category or logger), so any other warning or message still reaches
the user.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

# (message regex, category, why it is harmless here)
KNOWN_HARMLESS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"The '.*_dataloader' does not have many workers",
        UserWarning,
        "Lightning suggests workers for every loader; the in-memory loaders only slow down with them on 2 cores",
    ),
    (
        r".*isinstance\(treespec, LeafSpec\)` is deprecated",
        Warning,
        "Lightning 2.6 against torch 2.14's pytree API; fixed upstream",
    ),
    (
        r"The number of training batches .* is smaller than the logging interval",
        UserWarning,
        "tiny runs (limits, debug presets) log once per epoch anyway",
    ),
    (
        r"Checkpoint directory .* exists and is not empty",
        UserWarning,
        "only a resumed run checkpoints into a directory that has files: a new run never shares one",
    ),
    (
        r"Precision bf16-mixed is not supported by the model summary",
        UserWarning,
        "only the summary's size-in-MB estimate assumes float32; the weights are float32 under autocast anyway",
    ),
    (
        r"The ``noload`` loader strategy is deprecated",
        DeprecationWarning,
        "MLflow's own SQL store (logger=mlflow) against SQLAlchemy 2.1; MLflow's to change, nothing of ours",
    ),
    (
        r".*(RetryHeartbeatStaleTrialCallback|RetryFailedTrialCallback|fail_stale_trials) is experimental",
        Warning,
        "Optuna's heartbeat API, used as documented by the sweeper (hydra.sweeper.heartbeat_interval, retry_failed)",
    ),
    (
        r"Argument ``(heartbeat_interval|grace_period|heartbeat_stale_trial_callback)`` is an experimental",
        Warning,
        "the same heartbeat API, through RDBStorage's arguments",
    ),
    (
        r"Heartbeat of storage is supposed to be used with Study.optimize",
        UserWarning,
        "the sweeper asks and tells, and records the heartbeats that Study.optimize would (sweeps.study_storage)",
    ),
    (
        r"No complete tensor found in the group",
        UserWarning,
        "torch.export.load of a .pt2 file; its caveat is for weights not on the CPU, and exported weights are "
        "on the CPU",
    ),
)

# Harmless only outside a SLURM allocation: inside one, a run not started by srun is a real mistake to hear about.
OUTSIDE_SLURM_JOBS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"The `srun` command is available on your system but is not used",
        Warning,
        "Lightning says so on any machine with SLURM's commands (a login node, a workstation), job or not",
    ),
)


def _harmless_here() -> tuple[tuple[str, type[Warning], str], ...]:
    return KNOWN_HARMLESS + (OUTSIDE_SLURM_JOBS if "SLURM_JOB_ID" not in os.environ else ())


# (logger, message regex, why it is noise here)
KNOWN_LOG_MESSAGES: tuple[tuple[str, str, str], ...] = (
    (
        "lightning.pytorch.utilities.rank_zero",
        r"Tip: .*litlogger",
        "Lightning advertises its hosted tracker at every Trainer's start; trackers here are chosen with logger=",
    ),
    (
        "lightning.pytorch.utilities.rank_zero",
        r"^Trainer already configured with model summary callbacks",
        "callbacks=default brings its own ModelSummary (callbacks.model_summary.max_depth); Lightning's is not wanted",
    ),
    (
        "lightning.pytorch.utilities.rank_zero",
        r"^`Trainer\(limit_(train|val|test|predict)_batches=1\.0\)` was configured",
        "Lightning restates a limit of 1.0 (all batches), which is what a limit means",
    ),
)


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def filter_known_warnings() -> None:
    """Silence exactly the known-harmless warnings and log messages for this process."""
    for message, category, _ in _harmless_here():
        warnings.filterwarnings("ignore", message=message, category=category)
    # A logger's filters see only what is logged to that logger itself, so each sits on the one that logs it;
    # set before that logger's package is imported, it is in place from the first message.
    for name, pattern, _ in KNOWN_LOG_MESSAGES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))


def as_pytest_filters() -> list[str]:
    """The same filters in pytest's ``filterwarnings`` syntax."""
    return [f"ignore:{message}:{category.__name__}" for message, category, _ in _harmless_here()]
