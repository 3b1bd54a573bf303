"""One study, several workers: a study-wide trial budget and the recovery of trials whose worker died.

Every worker runs the same loop against the shared storage; nothing else is shared and no
worker coordinates the others. A trial takes a place in the budget from the moment it is
asked until it fails: COMPLETE, PRUNED, RUNNING and WAITING (a retry queued by
``RetryFailedTrialCallback``) trials hold one each; a FAIL frees it. A worker asks only while
there is room, and then checks its new trial's place in the order the storage numbered the
trials, so two workers asking at the same moment cannot overshoot the budget: the later one
stores its trial as failed, unrun, with the reason in ``not_run``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fmnist_lightning.config.processes import HOST, process_alive

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


# Which sweep process asked a trial (host/pid namespace:pid), so that a trial left by a dead sweep on this
# host is seen at once.
SWEEPER_ATTR = "fmnist_sweeper"
SWEEPER_HOST = HOST
SWEEPER_ID = f"{SWEEPER_HOST}:{os.getpid()}"
# Set by RetryFailedTrialCallback on the trial it queues in place of a failed one.
RETRY_OF = "failed_trial"


def _states() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED), (
        TrialState.COMPLETE,
        TrialState.PRUNED,
        TrialState.RUNNING,
        TrialState.WAITING,
    )


@dataclass
class Room:
    finished: int
    taken: int
    running: int
    waiting: int
    # Trials whose job raised (not those whose worker died, nor those never run).
    failed_jobs: int
    max_trials: int

    @property
    def free(self) -> int:
        """Trials that may be asked now: new ones in the free places, and the queued retries."""
        return self.max_trials - self.taken + self.waiting

    @property
    def done(self) -> bool:
        return self.finished >= self.max_trials


def _awaiting_retry(trial: Any, retried: set[int], max_retry: int) -> bool:
    """A trial failed for silence whose retry is due but not queued yet: failing it and queuing its retry
    are two writes, and its place must not go to a new trial in between."""
    from optuna.trial import TrialState

    if trial.state != TrialState.FAIL or not max_retry or trial.number in retried:
        return False
    if "error" in trial.user_attrs or "not_run" in trial.user_attrs:
        return False  # its job failed, or it never ran: no retry comes
    return len(trial.system_attrs.get("retry_history", [])) < max_retry


def _places(study: optuna.Study, max_retry: int) -> tuple[list[Any], dict[int, bool]]:
    """The trials, and for each number whether it holds a place in the budget."""
    _, taken_states = _states()
    trials = study.get_trials(deepcopy=False)
    retried = {int(t.system_attrs["retry_history"][-1]) for t in trials if t.system_attrs.get("retry_history")}
    return trials, {t.number: t.state in taken_states or _awaiting_retry(t, retried, max_retry) for t in trials}


def room(study: optuna.Study, max_trials: int, max_retry: int = 0) -> Room:
    """How much of the study-wide budget is used, finished, running and failed (one read of the study)."""
    from optuna.trial import TrialState

    finished_states, _ = _states()
    trials, holds = _places(study, max_retry)
    return Room(
        finished=sum(t.state in finished_states for t in trials),
        taken=sum(holds.values()),
        running=sum(t.state == TrialState.RUNNING for t in trials),
        waiting=sum(t.state == TrialState.WAITING for t in trials),
        failed_jobs=sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials),
        max_trials=max_trials,
    )


def over_budget(study: optuna.Study, number: int, max_trials: int, max_retry: int = 0) -> bool:
    """True when trial ``number``, just asked, came after the budget was full.

    Ahead of it: every trial holding a place with a lower number, and every queued or due retry
    (which takes the place of the trial it retries, whatever its number). A retry itself is never over."""
    from optuna.trial import TrialState

    trials, holds = _places(study, max_retry)
    mine = next(t for t in trials if t.number == number)
    if RETRY_OF in mine.system_attrs:
        return False
    # A failed trial that holds a place is awaiting its retry: ahead whatever its number, as the retry will be.
    ahead = sum(
        holds[t.number]
        and t.number != number
        and (t.number < number or RETRY_OF in t.system_attrs or t.state == TrialState.FAIL)
        for t in trials
    )
    return ahead >= max_trials


def recover(study: optuna.Study, retry: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None) -> None:
    """Store as FAIL the running trials whose worker is gone, and queue their retries (``retry``).

    Fast path: a trial asked by a sweep process on this host that no longer exists. Otherwise a
    trial whose heartbeat is older than the storage's grace period (Optuna's ``fail_stale_trials``,
    which calls the storage's stale-trial callback, the retry, itself)."""
    import optuna
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    told_here = set()
    for trial in running:
        owner_host, _, pid = str(trial.user_attrs.get(SWEEPER_ATTR, "")).rpartition(":")
        if owner_host == SWEEPER_HOST and pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
            try:
                study.tell(trial.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # another worker told it first
                continue
            told_here.add(trial.number)
            log.warning(
                "Trial %d was left running by a sweep on this host that is gone (%s); stored as failed",
                trial.number,
                trial.user_attrs.get(SWEEPER_ATTR),
            )
            if retry is not None:
                retry(study, study.trials[trial.number])
    optuna.storages.fail_stale_trials(study)
    after = {t.number: t for t in study.get_trials(deepcopy=False)}
    for trial in running:
        now = after[trial.number]
        # A job that raised stored its error before its worker told FAIL; a dead one stored nothing.
        if now.state == TrialState.FAIL and trial.number not in told_here and "error" not in now.user_attrs:
            log.warning(
                "Trial %d (on %s) sent no heartbeat for the grace period; stored as failed%s",
                trial.number,
                now.user_attrs.get("host", "an unknown host"),
                " and queued again" if retry else "",
            )
