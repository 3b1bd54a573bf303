"""``hydra/sweeper=optuna``: Hydra parses the search space, Optuna searches, Hydra's launcher runs the trials.

The search space is written as Hydra sweep overrides (``hydra.sweeper.params`` or the
command line): ``interval(a, b)`` and ``tag(log, interval(a, b))`` are float (or int)
ranges, ``choice(...)`` a categorical, ``range(a, b[, step])`` an int grid; anything else is
a fixed value. ``n_jobs`` trials are asked for at once and run by the configured launcher
(basic, joblib, submitit, slurm). A trial's job learns which trial it is through environment
variables set by ``hydra.job.env_set`` (so it works in any launcher process, on any machine
that reaches the storage); ``fmnist_lightning.training.callbacks.optuna_pruning.OptunaPruning`` reports the optimised
metric at every validation and stops a hopeless trial, which is then told PRUNED. A job that
raises is told FAIL and the search goes on, up to ``max_failure_rate``. The study lives in
``storage`` (``sqlite:///``, ``journal:///`` or a database server's SQLAlchemy URL), so running
again with the same study extends it, and the same command started on several machines makes
them workers of one study: ``max_trials`` bounds the whole study, heartbeats let any worker fail
(and, with ``retry_failed``, re-ask) a trial whose worker died (``fmnist_lightning.sweeps.study_budget``).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.files import METRICS_FILE, SWEEP_FILE, write_text_atomic
from fmnist_lightning.config.masking import mask_text
from fmnist_lightning.errors import first_line
from fmnist_lightning.sweeps.search_space import (
    OBSOLETE,
    built,
    check_objective_is_measured,
    check_searched_keys,
    check_sweeper_settings,
    search_space,
)
from fmnist_lightning.sweeps.study_budget import (
    SWEEPER_ATTR,
    SWEEPER_ID,
    over_budget,
    recover,
    room,
)
from fmnist_lightning.sweeps.study_storage import Heartbeats, absolute_url, local_file, open_storage
from fmnist_lightning.sweeps.study_trial import TRIAL_ENV

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int | None = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        params: DictConfig | None = None,
        pruner: Any = None,
        custom_search_space: str | None = None,
        max_trials: int | None = None,
        heartbeat_interval: int | None = 60,
        grace_period: int | None = None,
        retry_failed: int = 0,
        **obsolete: Any,
    ) -> None:
        for key in obsolete:
            raise ValueError(
                f"hydra.sweeper.{key} is not supported by this Optuna sweeper: "
                f"{OBSOLETE.get(key, 'remove it (see README: Optuna searches)')}"
            )
        check_sweeper_settings(
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_trials=max_trials,
            retry_failed=retry_failed,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            max_failure_rate=max_failure_rate,
            direction=direction,
        )
        if n_trials is None and max_trials is None:
            raise ValueError("hydra.sweeper.n_trials=null needs hydra.sweeper.max_trials (the study-wide budget)")
        if heartbeat_interval and grace_period is not None and grace_period <= heartbeat_interval:
            raise ValueError(
                f"hydra.sweeper.grace_period ({grace_period} s) must be longer than heartbeat_interval "
                f"({heartbeat_interval} s), or live trials would be failed"
            )
        if retry_failed and not heartbeat_interval:
            raise ValueError("hydra.sweeper.retry_failed needs heartbeats: set hydra.sweeper.heartbeat_interval")
        import optuna

        self.sampler, self.pruner = built(sampler), built(pruner) or optuna.pruners.NopPruner()
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.max_trials, self.retry_failed = max_trials, retry_failed
        # No storage, no heartbeats: an in-memory study lives and dies with this process.
        self.heartbeat_interval = heartbeat_interval if storage else None
        self.grace_period = grace_period
        self.params: dict[str, Any] = dict(params or {})
        self.extend_space = get_method(custom_search_space) if custom_search_space else None
        self.job_idx = 0
        self.retry: Any = None
        self.study_storage: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _trial_overrides(self, trial: optuna.Trial, fixed: dict[str, str], study: optuna.Study) -> tuple[str, ...]:
        if self.extend_space is not None:
            self.extend_space(self.config, trial)
        values = dict(trial.params)
        # Absolute: a job may run in another working directory, or on another machine of a shared filesystem.
        env = {
            "storage": absolute_url(str(self.storage)),
            "study": study.study_name,
            "trial": str(trial._trial_id),
            "heartbeat": str(self.heartbeat_interval or ""),
        }
        return (
            *(f"{key}={value}" for key, value in {**values, **fixed}.items()),
            # Named by the study's own trial number, which no other worker of the study can be given.
            f"hydra.sweep.subdir=trial_{trial.number}",
            *(
                f"++hydra.job.env_set.{TRIAL_ENV[k]}={json.dumps(v, ensure_ascii=False)}"
                for k, v in env.items()
                if self.storage
            ),
        )

    def _open_study(self) -> optuna.Study:
        import optuna

        storage = None
        if self.storage:
            # Optuna 4.9 renamed RetryFailedTrialCallback (same behaviour); the old name goes in 6.0.
            retry = (
                getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
                or optuna.storages.RetryFailedTrialCallback
            )
            self.retry = retry(max_retry=self.retry_failed) if self.retry_failed else None
            storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period, self.retry)
        self.study_storage = storage
        return optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=self.sampler,
            pruner=self.pruner,
            direction=self.direction,  # type: ignore[arg-type]  # Optuna checks the value itself
            load_if_exists=True,
        )

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space([f"{k!s}={v}" for k, v in self.params.items()] + list(arguments))
        assert self.config is not None  # setup() set it
        check_searched_keys(space, self.config)
        check_objective_is_measured(space, self.config)
        # The sweep's composed config beside its trials, as Hydra's own sweeper leaves it: what the study searched,
        # with which sampler and storage (masked, as every file we write; the summary and run names read it).
        write_text_atomic(Path(self.config.hydra.sweep.dir) / SWEEP_FILE, OmegaConf.to_yaml(self.config))
        study = self._open_study()
        if self.max_trials is not None:
            # Workers started with one command share its seed; each must draw its own parameters.
            self.sampler.reseed_rng()
        recover(study, self.retry)
        where = local_file(self.storage) if self.storage else None
        # The file's absolute path: every worker of one study must name the same file.
        log.info(
            "Study %s in %s: %d trials so far; %s, %s, %s",
            study.study_name,
            where.resolve() if where else mask_text(str(self.storage)),
            len(study.trials),
            type(self.sampler).__name__,
            type(self.pruner).__name__,
            self.direction,
        )
        asked, waiting = 0, False
        while self.n_trials is None or asked < self.n_trials:
            recover(study, self.retry)
            want = self.n_jobs if self.n_trials is None else min(self.n_jobs, self.n_trials - asked)
            if self.max_trials is not None:
                budget = room(study, self.max_trials, self.retry_failed)
                if self._too_many_failures(study, budget.failed_jobs):
                    break
                if budget.done:
                    log.info(
                        "Study %s holds %d finished trials (max_trials=%d): done",
                        study.study_name,
                        budget.finished,
                        self.max_trials,
                    )
                    break
                if budget.free <= 0:
                    if not self.heartbeat_interval:
                        log.info("The rest of max_trials=%d is running on other workers", self.max_trials)
                        break
                    # Wait for the others' running trials: any that dies is failed here and asked again.
                    if not waiting:
                        log.info(
                            "Waiting for %d running trials of study %s to finish", budget.running, study.study_name
                        )
                    waiting = True
                    time.sleep(self.heartbeat_interval)
                    continue
                want = min(want, budget.free)
            waiting = False
            trials = self._ask(study, space, want)
            if trials:
                self._run_batch(study, trials, fixed)
                asked += len(trials)
        self._write_results(study)

    def _ask(self, study: optuna.Study, space: dict[str, BaseDistribution], count: int) -> list[optuna.Trial]:
        import optuna

        trials = []
        for _ in range(count):
            trial = study.ask(space)
            # At once: a retry carries its failed trial's owner, and a trial with no owner and no beat
            # would never be seen dead.
            trial.set_user_attr(SWEEPER_ATTR, SWEEPER_ID)
            if self.heartbeat_interval:
                self.study_storage.record_heartbeat(trial._trial_id)
            if self.max_trials is not None and over_budget(study, trial.number, self.max_trials, self.retry_failed):
                trial.set_user_attr("not_run", f"asked after the study's max_trials={self.max_trials} were taken")
                self._tell_once(study, trial, state=optuna.trial.TrialState.FAIL)
                log.info("Trial %d not run: another worker took the last place in max_trials", trial.number)
                break
            trials.append(trial)
        return trials

    def _run_batch(self, study: optuna.Study, trials: list[optuna.Trial], fixed: dict[str, str]) -> None:
        overrides = [self._trial_overrides(trial, fixed, study) for trial in trials]
        # Beats from here too: a job may wait in a cluster's queue, or take a while to start.
        beats = (
            Heartbeats(self.study_storage, [t._trial_id for t in trials], self.heartbeat_interval)
            if self.heartbeat_interval
            else nullcontext()
        )
        assert self.launcher is not None  # setup() made it
        with beats:
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += len(returns)
        failures = sum(not self._tell(study, trial, ret) for trial, ret in zip(trials, returns, strict=True))
        if failures / len(returns) > self.max_failure_rate:
            raise RuntimeError(
                f"{failures} of {len(returns)} trials failed (max_failure_rate="
                f"{self.max_failure_rate}); see the jobs' status.json"
            )

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any) -> bool:
        """Store the trial's outcome; False if it failed."""
        import optuna

        try:
            value = float(ret.return_value)  # re-raises the job's own exception for a failed job
        except Exception as exc:  # noqa: BLE001 - any failure of a trial is stored, and the search goes on
            self._tell_once(study, trial, state=optuna.trial.TrialState.FAIL)
            log.warning("Trial %d failed: %s", trial.number, first_line(exc))
            return False
        pruned_at = self._pruned_at(study, trial, ret)
        if pruned_at is not None:
            self._tell_once(study, trial, state=optuna.trial.TrialState.PRUNED)
            log.info("Trial %d pruned after epoch %d (%s so far)", trial.number, pruned_at, value)
        else:
            self._tell_once(study, trial, value)
        return True

    @staticmethod
    def _tell_once(study: optuna.Study, trial: optuna.Trial, value: float | None = None, **kwargs: Any) -> None:
        """Tell, unless another worker has already stored the trial (failed it for silence) in the meantime."""
        import optuna

        try:
            study.tell(trial, value, skip_if_finished=True, **kwargs)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("Trial %d was already stored as finished by another worker", trial.number)

    def _too_many_failures(self, study: optuna.Study, failed: int) -> bool:
        """A study-wide loop stops when its jobs keep failing: more than max_failure_rate of max_trials, and
        at most max_trials, failed jobs (not counting trials whose worker died)."""
        if self.max_trials is None or (failed <= self.max_failure_rate * self.max_trials and failed < self.max_trials):
            return False
        log.warning(
            "Study %s has %d failed jobs (max_failure_rate=%s of max_trials=%d); stopping; see the failed "
            "trials' errors",
            study.study_name,
            failed,
            self.max_failure_rate,
            self.max_trials,
        )
        return True

    @staticmethod
    def _pruned_at(study: optuna.Study, trial: optuna.Trial, ret: Any) -> int | None:
        # The job stored it in its trial; a job that could not reach the storage wrote it in its metrics.json.
        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number).user_attrs.get(
            "pruned_at_epoch"
        )
        if stored is not None:
            return int(stored)
        metrics = Path(ret.hydra_cfg.hydra.runtime.output_dir) / METRICS_FILE
        try:
            return json.loads(metrics.read_text()).get("pruned_at_epoch")
        except (OSError, ValueError):
            return None

    def _write_results(self, study: optuna.Study) -> None:
        import optuna

        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        counts = {state.name.lower(): sum(t.state == state for t in study.trials) for state in optuna.trial.TrialState}
        results: dict[str, Any] = {"name": "optuna", "study_name": study.study_name, "trials": counts}
        if done:
            results.update(best_params=study.best_trial.params, best_value=study.best_value)
            log.info("Best value %s with %s", study.best_value, study.best_trial.params)
        assert self.config is not None  # setup() set it
        write_text_atomic(Path(self.config.hydra.sweep.dir) / "optimization_results.yaml", OmegaConf.to_yaml(results))
