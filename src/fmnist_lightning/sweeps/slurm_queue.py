"""Job states for submitit from SLURM's queue when the cluster keeps no accounting.

submitit asks ``sacct`` for the state of every job it waits on. A cluster without accounting
(no slurmdbd: many small and lab clusters) answers ``Slurm accounting storage is disabled``, and
submitit warns about it on every poll of a sweep. Without accounting, slurmctld still knows every
job that is queued, running, or ended less than ``MinJobAge`` seconds ago: ``squeue`` tells the
same three fields. ``QueueWatcher`` asks ``sacct`` first and, once it answers that accounting is
off, asks ``squeue`` instead, saying so once. A job that ``squeue`` no longer lists has ended and
been forgotten by the controller: it is reported ``ENDED``, so that submitit reads its result
file (or says it left none) rather than wait for ever.
"""

from __future__ import annotations

import logging
import subprocess

from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

log = logging.getLogger(__name__)

HEADER = "JobID|State|NodeList"
ACCOUNTING_OFF = "accounting storage is disabled"
ENDED = "ENDED"


class QueueWatcher(SlurmInfoWatcher):
    """submitit's ``sacct`` watcher, with ``squeue`` in its place on a cluster that keeps no accounting."""

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s=delay_s)
        self.accounting: bool | None = None  # unknown until sacct has answered once

    def _pending_ids(self) -> list[str]:
        return sorted({job_id.split("_")[0] for job_id in self._registered - self._finished})

    def _accounting_is_on(self, ids: list[str]) -> bool:
        if self.accounting is None:
            probe = subprocess.run(["sacct", "-n", "-X", "-j", ids[0]], capture_output=True, text=True, timeout=60)
            self.accounting = ACCOUNTING_OFF not in probe.stderr
            if not self.accounting:
                log.info(
                    "SLURM keeps no accounting here (sacct: %s); job states come from squeue", probe.stderr.strip()
                )
        return self.accounting

    def _make_command(self) -> list[str] | None:
        ids = self._pending_ids()
        if not ids or self._accounting_is_on(ids):
            return super()._make_command()
        # --states=all: jobs that ended within MinJobAge too; %i prints array tasks as <job>_<task>.
        return ["squeue", "-h", "--states=all", "-o", "%i|%T|%N", "-j", ",".join(ids)]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        if self.accounting is not False:
            return super().read_info(string)
        text = string.decode() if isinstance(string, bytes) else string
        listed = super().read_info(f"{HEADER}\n{text}")
        # Asked about and not listed: ended, and forgotten by the controller after MinJobAge.
        for job_id in self._registered - self._finished:
            if job_id not in listed and job_id.split("_")[0] not in listed:
                listed[job_id] = {"JobID": job_id, "State": ENDED, "NodeList": ""}
        return listed


def watch_queue() -> None:
    """Make every SLURM job submitit waits on in this process use ``QueueWatcher``."""
    if not isinstance(SlurmJob.watcher, QueueWatcher):
        SlurmJob.watcher = QueueWatcher(delay_s=SlurmJob.watcher._delay_s)
