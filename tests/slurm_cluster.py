"""A real SLURM cluster on simulated hosts: Debian's slurm-wlm and munge, started here, torn down after.

``SlurmCluster(hosts, controller="ctl", nodes=["n1", "n2"])`` starts one munged (its own key and
socket, never the machine's ``/etc/munge``), slurmctld on the controller's host and one slurmd per
node host, each with its own hostname, address and spool directory, and waits until every node is
``idle``. Every file lives in one temporary directory, ``SLURM_CONF`` names its ``slurm.conf``:
commands run on a host through ``cluster.run(host, argv)`` or with ``cluster.env``. The hosts share
the filesystem, as a cluster's nodes share ``/home``. Accounting is off (no slurmdbd): ``sacct``
answers nothing, as on the many small clusters that run without it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from simulated_hosts import Hosts

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch")
CONTROLLERS = ("freezer", "cpuset", "memory", "devices", "cpu", "cpuacct")
MOUNT_CGROUPS = "mount -t tmpfs cgroup /sys/fs/cgroup && " + " && ".join(
    f"mkdir /sys/fs/cgroup/{c} && mount -t cgroup -o {c} cgroup /sys/fs/cgroup/{c}" for c in CONTROLLERS
)


def slurm_unavailable() -> str | None:
    """Why a SLURM cluster cannot be started here, or None."""
    missing = [tool for tool in DAEMONS if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        return f"SLURM needs {', '.join(missing)}: apt-get install slurm-wlm munge"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """slurmctld on ``controller``, slurmd on each of ``nodes``, one partition ``debug`` holding them all."""

    PARTITION = "debug"
    CPUS = 2
    MEMORY_MB = 6000
    # Seconds between SIGTERM and SIGKILL when a job is cancelled, requeued or out of time (SLURM's default
    # is 30): long enough for a run to finish its batch and write its checkpoint.
    KILL_WAIT = 20

    def __init__(self, hosts: Hosts, controller: str, nodes: list[str]) -> None:
        self.hosts, self.controller, self.nodes = hosts, controller, list(nodes)
        self.dir = Path(tempfile.mkdtemp(prefix="fmnist-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[subprocess.Popen] = []
        try:
            self._start_munge()
            self._write_conf()
            self._start_slurm()
            self.wait_idle()
        except BaseException:
            self.stop()
            raise

    def _start_munge(self) -> None:
        munge = self.dir / "munge"
        munge.mkdir(mode=0o700)
        key = munge / "munge.key"
        subprocess.run([_tool("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        key.chmod(0o400)
        self.socket = munge / "munge.sock"
        # --force: munged refuses to run as root otherwise; the key and socket are this cluster's alone.
        self.daemons.append(
            subprocess.Popen(
                [
                    _tool("munged"),
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={self.socket}",
                    f"--pid-file={munge / 'munged.pid'}",
                    f"--log-file={munge / 'munged.log'}",
                    f"--seed-file={munge / 'munged.seed'}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        self._wait(lambda: self.socket.exists(), "munged")

    def _write_conf(self) -> None:
        d, hosts = self.dir, self.hosts
        node_lines = "".join(
            f"NodeName={n} NodeAddr={hosts.address(n)} CPUs={self.CPUS} RealMemory={self.MEMORY_MB} State=UNKNOWN\n"
            for n in self.nodes
        )
        self.conf.write_text(f"""\
ClusterName=fmnist
SlurmctldHost={self.controller}({hosts.address(self.controller)})
AuthType=auth/munge
AuthInfo=socket={self.socket}
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/spool/%n/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd-%n.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
KillWait={self.KILL_WAIT}
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
SchedulerParameters=sched_interval=2
{node_lines}PartitionName={self.PARTITION} Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
""")
        (d / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        (d / "state").mkdir()
        for n in self.nodes:
            (d / "spool" / n).mkdir(parents=True)

    def _start_slurm(self) -> None:
        ctld = self.hosts.popen(
            self.controller,
            [_tool("slurmctld"), "-D", "-i", "-f", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "slurmctld.out").open("w"),
            env=self.env,
        )
        self.daemons.append(ctld)
        for n in self.nodes:
            # `ip netns exec` mounts a sysfs of its own, without the cgroup filesystems slurmd's cgroup
            # plugin looks for (22.05 cannot turn it off): mount the machine's cgroup v1 hierarchies again there,
            # in the host's own mount namespace. (cgroup/v2 refuses a machine with v1 and v2 mounted side by side.)
            self.daemons.append(
                self.hosts.popen(
                    n,
                    [
                        "sh",
                        "-c",
                        MOUNT_CGROUPS + ' && exec "$@"',
                        "slurmd",
                        _tool("slurmd"),
                        "-D",
                        "-N",
                        n,
                        "-f",
                        str(self.conf),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(self.dir / f"slurmd-{n}.out").open("w"),
                    env=self.env,
                )
            )

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p for p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                gone = ", ".join(" ".join(p.args[-6:]) for p in dead) or "none"
                raise RuntimeError(f"{what} did not start (exited: {gone}):\n{self.logs()}")
            time.sleep(0.2)

    def node_states(self) -> dict[str, str]:
        out = self.run(self.controller, ["sinfo", "-h", "-N", "-o", "%N %T"], timeout=30)
        return dict(line.split() for line in out.stdout.splitlines() if line.strip()) if out.returncode == 0 else {}

    def wait_idle(self, timeout: float = 90) -> None:
        """Until every node is ``idle`` (registered with the controller and free)."""
        self._wait(
            lambda: all(self.node_states().get(n) == "idle" for n in self.nodes), f"the nodes {self.nodes}", timeout
        )

    def run(self, host: str, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """``argv`` (e.g. ``squeue``) on ``host``, with this cluster's ``SLURM_CONF``."""
        return self.hosts.run(host, argv, timeout=timeout, env=self.env)

    def job_state(self, job_id: str) -> str:
        """The job's state as slurmctld has it (``scontrol show job``: kept ``MinJobAge`` s after it ends)."""
        out = self.run(self.controller, ["scontrol", "-o", "show", "job", job_id], timeout=30).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get("JobState", "UNKNOWN")

    def logs(self) -> str:
        """The daemons' logs, for a failing test's message."""
        files = sorted([*self.dir.glob("*.log"), *self.dir.glob("*.out"), *self.dir.glob("munge/*.log")])
        return "\n".join(f"== {p.name}\n{p.read_text()[-1500:]}" for p in files)

    def stop(self) -> None:
        for proc in reversed(self.daemons):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    self.hosts.kill(proc)
        self.daemons.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
