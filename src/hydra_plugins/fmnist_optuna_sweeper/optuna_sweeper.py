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
``storage`` (any SQLAlchemy URL), so running again with the same study extends it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.files import METRICS_FILE
from fmnist_lightning.errors import first_line
from hydra_plugins.fmnist_optuna_sweeper import TRIAL_ENV

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

log = logging.getLogger(__name__)

# Which sweep process asked a trial (host:pid), so that a resumed study can tell an interrupted trial.
SWEEPER_ATTR = "fmnist_sweeper"
SWEEPER_ID = f"{socket.gethostname()}:{os.getpid()}"
# Keys of hydra-optuna-sweeper 1.x that have no meaning here.
OBSOLETE = {"search_space": "write the search space under hydra.sweeper.params with interval()/choice()/range()"}


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of one sweep override, or None for a fixed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            # range()'s stop is exclusive, Optuna's high inclusive.
            return FloatDistribution(value.start, value.stop - value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - int(value.step), step=int(value.step))
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log_scale)
    return FloatDistribution(float(value.start), float(value.end), log=log_scale)


def search_space(arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """``({key: distribution}, {key: fixed value})`` from Hydra override strings; later ones win."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(arguments)):
        key = override.get_key_element()
        found = distribution(override)
        space.pop(key, None), fixed.pop(key, None)
        if found is None:
            fixed[key] = override.get_value_element_as_str()
        else:
            space[key] = found
    return space, fixed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        params: DictConfig | None = None,
        pruner: Any = None,
        custom_search_space: str | None = None,
        **obsolete: Any,
    ) -> None:
        for key in obsolete:
            raise ValueError(f"hydra.sweeper.{key} is not supported by this Optuna sweeper: "
                             f"{OBSOLETE.get(key, 'remove it (see README: Optuna searches)')}")
        if not 0 <= max_failure_rate <= 1 or n_trials < 1 or n_jobs < 1:
            raise ValueError(f"need n_trials >= 1, n_jobs >= 1 and 0 <= max_failure_rate <= 1 "
                             f"(got {n_trials}, {n_jobs}, {max_failure_rate})")
        import optuna

        self.sampler, self.pruner = sampler, pruner or optuna.pruners.NopPruner()
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = params or {}
        self.extend_space = get_method(custom_search_space) if custom_search_space else None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def _trial_overrides(self, trial: optuna.Trial, fixed: dict[str, str], study: optuna.Study) -> tuple[str, ...]:
        if self.extend_space is not None:
            self.extend_space(self.config, trial)
        values = dict(trial.params)
        env = {"storage": str(self.storage), "study": study.study_name, "trial": str(trial._trial_id)}
        return (
            *(f"{key}={value}" for key, value in {**values, **fixed}.items()),
            *(f"++hydra.job.env_set.{TRIAL_ENV[k]}={json.dumps(v)}" for k, v in env.items() if self.storage),
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    pruner=self.pruner, direction=self.direction, load_if_exists=True)
        self._fail_interrupted(study)
        log.info("Study %s in %s: %d trials so far; %s, %s, %s", study.study_name, self.storage, len(study.trials),
                 type(self.sampler).__name__, type(self.pruner).__name__, self.direction)
        remaining = self.n_trials
        while remaining > 0:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, remaining))]
            for trial in trials:
                trial.set_user_attr(SWEEPER_ATTR, SWEEPER_ID)
            overrides = [self._trial_overrides(trial, fixed, study) for trial in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failures = sum(not self._tell(study, trial, ret) for trial, ret in zip(trials, returns))
            if failures / len(returns) > self.max_failure_rate:
                raise RuntimeError(f"{failures} of {len(returns)} trials failed (max_failure_rate="
                                   f"{self.max_failure_rate}); see the jobs' status.json")
            remaining -= len(trials)
        self._write_results(study)

    @staticmethod
    def _fail_interrupted(study: optuna.Study) -> None:
        """Trials left RUNNING by a sweep on this machine that was killed are stored as FAIL, so a resumed
        study does not wait on them. A running trial of a live sweep (here or elsewhere) is left alone."""
        import optuna

        host = SWEEPER_ID.split(":")[0]
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            owner = str(trial.user_attrs.get(SWEEPER_ATTR, ""))
            owner_host, _, pid = owner.rpartition(":")
            if owner_host == host and pid.isdigit() and not _alive(int(pid)):
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                log.warning("Trial %d was left running by an interrupted sweep (%s); stored as failed",
                            trial.number, owner)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: Any) -> bool:
        """Store the trial's outcome; False if it failed."""
        import optuna

        try:
            value = float(ret.return_value)  # re-raises the job's own exception for a failed job
        except Exception as exc:  # noqa: BLE001 - any failure of a trial is stored, and the search goes on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            log.warning("Trial %d failed: %s", trial.number, first_line(exc))
            return False
        pruned_at = self._pruned_at(ret)
        if pruned_at is not None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log.info("Trial %d pruned after epoch %d (%s so far)", trial.number, pruned_at, value)
        else:
            study.tell(trial, value)
        return True

    @staticmethod
    def _pruned_at(ret: Any) -> int | None:
        # The job's metrics.json says whether OptunaPruning stopped it (a shared file system, as for the study).
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
        OmegaConf.save(OmegaConf.create(results), Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")
