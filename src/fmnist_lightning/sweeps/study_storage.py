"""Where an Optuna study lives, named by one URL, and the heartbeats that tell a live trial from a dead one.

- ``sqlite:///<file>``: one machine (SQLite's file locks do not hold across machines).
- ``journal:///<file>``: an append-only journal file (Optuna's ``JournalFileBackend``) behind a
  lock made with ``link()``, which is atomic on NFS too: a cluster with a shared filesystem
  and no database server. Paths follow SQLite's URLs: ``journal:///rel/path``,
  ``journal:////abs/path``.
- any other SQLAlchemy URL (``postgresql+psycopg://user:password@host/db``, ``mysql+pymysql://...``):
  a database server that every machine reaches.

Optuna's ``RDBStorage`` records heartbeats itself; its ``JournalStorage`` does not, so
``JournalHeartbeatStorage`` keeps them as a trial system attribute, and Optuna's own
``fail_stale_trials`` then works on all three.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.errors import FmnistError, first_line

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

log = logging.getLogger(__name__)

JOURNAL_SCHEME = "journal:///"
HEARTBEAT_ATTR = "fmnist_heartbeat"
# A database server that does not answer within this long is reported, not waited on forever.
CONNECT_TIMEOUT_S = 10


class StorageError(FmnistError):
    """A study storage that cannot be opened: unreachable, misspelt, or refusing us."""


def _password(url: str) -> str | None:
    """The password in a database URL, as SQLAlchemy reads it (it may hold ``/`` or ``:``)."""
    if not url or url.startswith(("journal:", "sqlite:")):
        return None
    try:
        from sqlalchemy.engine import make_url

        password = make_url(url).password
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can read: take what sits between : and the last @
        found = re.search(r"://[^:/@]*:(.*)@", url)
        password = found.group(1) if found else None
    return str(password) if password else None


def journal_path(url: str) -> Path:
    """The file of a ``journal:///<path>`` URL (relative after three slashes, absolute after four)."""
    path = url[len(JOURNAL_SCHEME) :]
    if not url.startswith(JOURNAL_SCHEME) or not path:
        raise StorageError(
            f"{url!r} is not a journal URL; write journal:///<relative path> or journal:////<absolute path>"
        )
    return Path(path)


def _heartbeat_journal() -> type:
    # Built on first use: Optuna is an optional dependency, imported only by sweeps.
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
        """Optuna's journal storage with heartbeats kept as a trial system attribute (wall-clock seconds)."""

        def __init__(
            self,
            backend: Any,
            heartbeat_interval: int | None,
            grace_period: int | None,
            stale_callback: Callable[..., None] | None,
        ) -> None:
            super().__init__(backend)
            self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
            self.stale_callback = stale_callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            # From the later of its last beat and its start: a retry inherits its failed trial's attributes,
            # the old beat included, and must not count as stale before its own first beat.
            return [
                t._trial_id
                for t in running
                if HEARTBEAT_ATTR in t.system_attrs
                and now - max(float(t.system_attrs[HEARTBEAT_ATTR]), _started(t)) > grace
            ]

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self) -> Callable[..., None] | None:
            return self.stale_callback

    return JournalHeartbeatStorage


def absolute_url(url: str) -> str:
    """A sqlite or journal URL with its file's absolute path (four slashes), as every process of a study must
    name it whatever its working directory; any other URL as given."""
    path = local_file(url)
    if path is None or path.is_absolute():
        return url
    scheme = "journal" if url.startswith("journal:") else "sqlite"
    return f"{scheme}:///{path.resolve()}"


def local_file(url: str) -> Path | None:
    """The file behind a ``sqlite:///`` or ``journal:///`` URL; None for a database server."""
    if url.startswith("journal:"):
        return journal_path(url)
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///") :])
    return None


def _started(trial: Any) -> float:
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else 0.0


# Optuna's own: a journal lock unchanged this long was left by a dead process, and is broken.
JOURNAL_LOCK_GRACE = 30
# ... and the least it calls safe: a shorter one warns that a live holder's lock may be broken.
JOURNAL_LOCK_LEAST = 3


def journal_lock_grace(heartbeat_interval: int | None, grace_period: int | None) -> int:
    """Seconds before a journal's lock, left by a worker killed while it held it, is broken.

    Until then no heartbeat can be written: a live trial whose beats wait that long behind the lock
    would look dead to the other workers. So the lock is broken within half of what the heartbeat
    grace period leaves after one interval, never later than Optuna's default and never sooner than
    the 3 s Optuna calls safe (a live holder's lock must not be broken)."""
    if not heartbeat_interval:
        return JOURNAL_LOCK_GRACE
    grace = grace_period or 2 * heartbeat_interval
    return max(JOURNAL_LOCK_LEAST, min(JOURNAL_LOCK_GRACE, (grace - heartbeat_interval) // 2))


def open_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    must_exist: bool = False,
) -> BaseStorage:
    """The storage a URL names, with heartbeats every ``heartbeat_interval`` seconds when set; a trial
    silent for ``grace_period`` (default twice the interval) is stale and handed to ``stale_callback``.
    ``must_exist``: a sqlite or journal file that is not there is an error, not a new empty study.

    Raises ``StorageError`` (one line, password hidden) when it cannot be opened."""

    path = local_file(url)
    if must_exist and path is not None and not path.is_file():
        raise StorageError(
            f"no study storage at {url}: {path.resolve()} does not exist (sqlite:/// and journal:/// "
            "take a relative path after three slashes, an absolute one after four)"
        )
    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = JournalFileSymlinkLock(str(path), grace_period=journal_lock_grace(heartbeat_interval, grace_period))
            backend = JournalFileBackend(str(path), lock_obj=lock)
            return _heartbeat_journal()(backend, heartbeat_interval, grace_period, stale_callback)
        engine_kwargs: dict[str, Any] = {}
        if url.startswith(("postgresql", "mysql")):
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
            # A worker that sleeps between trials finds its pooled connection dropped by the server.
            engine_kwargs["pool_pre_ping"] = True
        return _rdb_storage(
            url,
            engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_callback,
        )
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, the driver and the filesystem each raise their own
        reason = first_line(exc)
        if isinstance(exc, ImportError) and url.startswith("postgresql"):
            reason += " (for PostgreSQL write postgresql+psycopg://...; psycopg comes with the sweeps extra)"
        password = _password(url)
        if password:
            reason = reason.replace(password, "***")
        raise StorageError(
            f"cannot open the study storage {mask_text(url)}: {reason}; check the URL (sqlite:///<file>, "
            "journal:///<file> or a database's, e.g. postgresql+psycopg://<user>@<host>/<db>) and that its server "
            "is up and reachable from here"
        ) from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], **kwargs: Any) -> BaseStorage:
    import optuna
    import sqlalchemy.exc

    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            # Workers started together on an empty database race to create Optuna's tables (a duplicate type or
            # table; in SQLite "table ... already exists" or alembic's version row twice); the losers find them
            # made on the next try.
            if attempt == 2 or not re.search(r"duplicate|already exists|UNIQUE constraint failed", str(exc)):
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


class HeartbeatStorage(Protocol):
    """A storage that records trial heartbeats: Optuna's RDBStorage, and this module's journal storage."""

    def record_heartbeat(self, trial_id: int) -> None: ...


class Heartbeats:
    """Records a heartbeat for some trials every ``interval`` seconds from a daemon thread, until stopped.

    A storage call that fails (a database restarting) is logged and tried again at the next beat:
    a trial whose beats stay away longer than the grace period is failed by the other workers."""

    def __init__(self, storage: HeartbeatStorage, trial_ids: Iterable[int], interval: float) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial_id in self.trial_ids:
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.warning("Heartbeat of trial %d not recorded: %s", trial_id, first_line(exc))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> Heartbeats:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
