"""Which process on which host: for leftovers (a trial's claim, a staging folder) that name the process that made
them, so that one whose process is gone can be told from one a live process still uses; and which start of a job
this process is (a scheduler's restart, a task after the first, a DDP rank joining a run that started)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Sequence


def _pid_namespace() -> str:
    # Containers that share a hostname (host networking) each have their own process ids.
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


# This host and its pid namespace: a process id means something only within both.
HOST = f"{socket.gethostname()}/{_pid_namespace()}"
# The same, short and safe in a file name.
HOST_TAG = hashlib.sha256(HOST.encode()).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host (and pid namespace) exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    return True


# SLURM sets it in a job's environment from its first requeue on (preemption, node failure, scontrol requeue,
# or a job that requeues itself before its time limit): how many times the job has started over.
RESTART_COUNT = "SLURM_RESTART_COUNT"


def scheduler_restarts() -> int:
    """How many times the scheduler has started this job again (0 outside SLURM and on its first start)."""
    try:
        return int(os.environ.get(RESTART_COUNT) or 0)
    except ValueError:
        return 0


def is_first_task() -> bool:
    """Whether this process is the first of its job's tasks (every process outside SLURM is): only it moves files."""
    return os.environ.get("SLURM_PROCID", "0") == "0"


def joins_a_started_run(args: Sequence[str]) -> bool:
    """Whether this process joins a run that already started: a DDP rank Lightning launched, or a multirun's DDP
    job run again in its own process (sweeps.ddp_jobs). Both pass the run's own directory with
    hydra.output_subdir=null, so they write no Hydra files there."""
    return "hydra.output_subdir=null" in args or os.environ.get("LOCAL_RANK") not in (None, "0")
