"""Simulated hosts for the tests: Linux network namespaces on a private bridge, and a real PostgreSQL server.

Each host is a network namespace with its own loopback, an ``eth0`` on a bridge that lives in a
namespace of its own (the machine's own network is never touched), an address on a private
subnet, its own hostname (``unshare --uts``) and an ``/etc/hosts`` naming every host (``ip netns
exec`` mounts ``/etc/netns/<namespace>/hosts`` over it), as a small cluster would have. The
filesystem is shared, as a cluster's shared filesystem is. Everything is deleted in ``close``.
Needs root, ``ip`` and ``unshare``; ``unavailable()`` says why not, for a skip.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SUBNET = "10.77.0"


def unavailable() -> str | None:
    """Why the simulated hosts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "simulated hosts need root (network namespaces)"
    missing = [tool for tool in ("ip", "unshare") if shutil.which(tool) is None]
    if missing:
        return f"simulated hosts need {' and '.join(missing)} (Debian's iproute2, util-linux)"
    probe = f"fmprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"network namespaces are not allowed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], check=False)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Hosts:
    """``Hosts(["h1", "h2"])``: one namespace per name, all on one bridge; ``popen``/``run`` a command on one."""

    def __init__(self, names: list[str]) -> None:
        self.tag = f"fm{secrets.token_hex(3)}"
        self.names = list(names)
        self.switch = f"{self.tag}sw"
        self.processes: list[subprocess.Popen] = []
        self.made: list[str] = []
        try:
            self._make()
        except BaseException:
            self.close()
            raise

    def namespace(self, name: str) -> str:
        return f"{self.tag}{name}"

    def address(self, name: str) -> str:
        return f"{SUBNET}.{self.names.index(name) + 1}"

    def _make(self) -> None:
        _ip("netns", "add", self.switch)
        self.made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        hosts_file = "127.0.0.1 localhost\n" + "".join(f"{self.address(n)} {n}\n" for n in self.names)
        for i, name in enumerate(self.names):
            ns = self.namespace(name)
            _ip("netns", "add", ns)
            self.made.append(ns)
            # Both ends are made inside namespaces: nothing appears in the machine's own network namespace.
            _ip("-n", self.switch, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.switch, "link", "set", f"v{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(name)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)

    def command(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` run on host ``name``: in its namespace, under its own hostname."""
        return [
            "ip",
            "netns",
            "exec",
            self.namespace(name),
            "unshare",
            "--uts",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            name,
            *argv,
        ]

    def popen(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(self.command(name, argv), start_new_session=True, **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, name: str, argv: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(name, argv), capture_output=True, text=True, timeout=timeout, **kwargs)

    def kill(self, proc: subprocess.Popen) -> None:
        """``kill -9`` the process and everything it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                self.kill(proc)
        for ns in reversed(self.made):
            # Whatever still runs in a namespace (a child that left its process group) would keep it alive.
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        self.made.clear()

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server from Debian's packages (/usr/lib/postgresql/<version>/bin), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A PostgreSQL server of its own on one simulated host, with a database and a password-protected user."""

    USER, PASSWORD, DATABASE, PORT = "fmnist", "study-pass-71", "optuna", 5432

    def __init__(self, hosts: Hosts, host: str) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server: apt-get install postgresql")
        self.hosts, self.host, self.bindir = hosts, host, bindir
        # The server runs as the postgres user, which must own its directory (pytest's tmp_path is root's alone).
        self.dir = Path(tempfile.mkdtemp(prefix="fmnist-pg-"))
        self.log = None
        try:
            self._start()
        except BaseException:
            self.stop()  # the directory holds the password file: never leave it behind
            raise

    def _start(self) -> None:
        bindir, hosts, host = self.bindir, self.hosts, self.host
        shutil.chown(self.dir, "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.PASSWORD + "\n")
        shutil.chown(pwfile, "postgres")
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bindir / "initdb"),
                "-D",
                str(self.dir / "data"),
                "-U",
                self.USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        with (self.dir / "data" / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0/24 scram-sha-256\n")
        self.server = hosts.popen(
            host,
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(bindir / "postgres"),
                "-D",
                str(self.dir / "data"),
                "-c",
                f"listen_addresses={hosts.address(host)}",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-p",
                str(self.PORT),
                "-c",
                "fsync=off",
                "-c",
                "max_connections=100",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._open_log(),
        )
        self._wait_ready()
        subprocess.run(
            hosts.command(host, [str(bindir / "createdb"), "-h", hosts.address(host), "-U", self.USER, self.DATABASE]),
            check=True,
            capture_output=True,
            env={**os.environ, "PGPASSWORD": self.PASSWORD},
        )

    def _open_log(self):
        self.log = (self.dir / "server.log").open("w")
        return self.log

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready = self.hosts.run(
                self.host,
                [str(self.bindir / "pg_isready"), "-h", self.hosts.address(self.host), "-p", str(self.PORT)],
                timeout=30,
            )
            if ready.returncode == 0:
                return
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(self.dir / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return (
            f"postgresql+psycopg://{self.USER}:{self.PASSWORD}@{self.hosts.address(self.host)}:{self.PORT}/"
            f"{self.DATABASE}"
        )

    def stop(self) -> None:
        server = getattr(self, "server", None)
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.hosts.kill(server)
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


DUMP_TRIALS = """
import json, sys
import optuna
from fmnist_lightning.sweeps.study_storage import open_storage
study = optuna.load_study(study_name=sys.argv[2], storage=open_storage(sys.argv[1], must_exist=True))
print(json.dumps([{"number": t.number, "state": t.state.name, "host": t.user_attrs.get("host"),
                   "retry_of": t.system_attrs.get("failed_trial"), "not_run": t.user_attrs.get("not_run")}
                  for t in study.trials]))
"""

# Runs a command on some host of the test: ``hosts.run`` bound to a host, or a SLURM cluster's login node.
OnHost = Callable[[list[str]], subprocess.CompletedProcess]


def killed_trial_rerun(run: OnHost, storage: str, study: str, max_trials: int) -> tuple[list[dict], dict, dict]:
    """The study's trials read from its storage alone, checked after one worker died mid-trial: the budget held
    exactly, nothing left running, one trial FAIL (not an unrun loser of a race) and rerun to completion.
    Returns ``(trials, killed, retry)``."""
    dumped = run([sys.executable, "-c", DUMP_TRIALS, storage, study])
    assert dumped.returncode == 0, dumped.stderr[-3000:]
    trials = json.loads(dumped.stdout)
    states = [t["state"] for t in trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == max_trials, trials
    assert "RUNNING" not in states and "WAITING" not in states, trials
    failed = [t for t in trials if t["state"] == "FAIL" and not t["not_run"]]
    assert len(failed) == 1, f"want one trial failed by its worker's death, got {failed}: {trials}"
    (killed,) = failed
    (retry,) = [t for t in trials if t["retry_of"] == killed["number"]]
    assert retry["state"] == "COMPLETE", retry
    return trials, killed, retry


def summary_from_storage(run: OnHost, storage: str, study: str, out: Path, trials: list[dict]) -> list[dict]:
    """``summarize --storage`` of the study: its summary.csv rows, one per trial."""
    summary = run(
        [sys.executable, "-m", "fmnist_lightning.summarize", "--storage", storage, "--study", study, "--out", str(out)]
    )
    assert summary.returncode == 0, summary.stderr[-3000:]
    with (out / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(row["job"] for row in rows) == sorted(f"trial_{t['number']}" for t in trials)
    return rows
