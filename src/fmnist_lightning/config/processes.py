"""Which process on which host: for leftovers (a trial's claim, a staging folder) that name the process that made
them, so that one whose process is gone can be told from one a live process still uses."""

from __future__ import annotations

import hashlib
import os
import socket


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
