"""What a job is called in the trackers (MLflow, W&B): the name of its run directory, or in a multirun
``<sweep>/<job> <swept overrides>``, e.g. ``2026-12-04_23-10-01_123456/1 optim.lr=0.003``, with the sweep
as the group of its jobs (``name_tracker_runs`` fills the logger configs' ``run_name``/``name``/``group``
left null, and adds the tags).

A job of a sweep is told by its directory: Hydra writes ``multirun.yaml`` into the sweep directory before
the first job (BasicSweeper), and the Optuna sweeper's jobs live in ``trial_<n>`` directories of theirs.
Reading the directory rather than ``hydra.mode`` keeps the name when a sweep's job is resumed (``resume=``
runs it as a single run in the same directory).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from fmnist_lightning.config.files import HYDRA_OVERRIDES, SWEEP_FILE, UNREADABLE_RUN_FILE, read_run_yaml
from fmnist_lightning.config.masking import holds_secret, mask_text, mask_values


def _sweep_dir(run: Path) -> Path | None:
    return run.parent if (run.parent / SWEEP_FILE).is_file() or run.name.startswith("trial_") else None


def _hydra() -> Any:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def swept_keys(sweep: Path) -> set[str] | None:
    """The keys a sweep varies: those given as sweeps on its command line, and the search space of
    ``hydra.sweeper.params`` (Optuna's, or the basic sweeper's); None when neither can be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: set[str] = set()
    found = False
    hydra = _hydra()
    params = hydra.sweeper.get("params") if hydra is not None else None
    if params:
        keys |= {str(k) for k in params}
        found = True
    if (sweep / SWEEP_FILE).is_file():
        sweep_config = read_run_yaml(sweep / SWEEP_FILE, dict, "restore it from a backup, or start a new sweep")
        task = OmegaConf.select(sweep_config, "hydra.overrides.task", default=None) or []
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        keys |= {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
        found = True
    return keys if found else None


def job_overrides(run: Path) -> list[str]:
    """The job's command-line overrides: Hydra's, or the run's ``.hydra/overrides.yaml`` outside a Hydra job."""
    hydra = _hydra()
    if hydra is not None and hydra.overrides.task:
        return [str(o) for o in hydra.overrides.task]
    saved = run / HYDRA_OVERRIDES
    if not saved.is_file():
        return []
    return [str(o) for o in read_run_yaml(saved, list, UNREADABLE_RUN_FILE)]


def run_name(output_dir: str) -> str:
    """The tracker run's name: the run directory's, or ``<sweep>/<job> <what the sweep varied for this job>``."""
    run = Path(str(output_dir))
    sweep = _sweep_dir(run)
    if sweep is None:
        return run.name
    keys = swept_keys(sweep)
    varied = [
        o
        for o in job_overrides(run)
        if not o.startswith("hydra.") and (keys is None or o.split("=", 1)[0].lstrip("+~") in keys)
    ]
    # A swept value may be a URL with a password in it; the name is shown everywhere.
    return mask_text(" ".join([f"{sweep.name}/{run.name}", *varied]))


def sweep_name(output_dir: str) -> str | None:
    """The sweep a job belongs to (its directory's name): the group of its runs. None for a single run."""
    sweep = _sweep_dir(Path(str(output_dir)))
    return sweep.name if sweep is not None else None


def run_tags(output_dir: str) -> dict[str, str]:
    """The tags of a tracker run: its own run directory, and for a job of a sweep the sweep and the job."""
    run = Path(str(output_dir))
    tags = {"run_dir": str(run)}
    sweep = sweep_name(output_dir)
    if sweep is not None:
        tags |= {"sweep": sweep, "job": run.name}
    return tags


def name_tracker_runs(group: DictConfig | None, output_dir: str) -> DictConfig | None:
    """A copy of the ``logger`` group with each tracker's run named for the job, where the config leaves the
    name null; MLflow runs also get ``run_tags`` beside the config's own tags (which win), secrets masked."""
    if group is None:
        return None
    named = group.copy()
    with open_dict(named):
        for node in named.values():
            if not isinstance(node, DictConfig):
                continue
            kind = str(node.get("_target_", "")).rsplit(".", 1)[-1]
            if kind == "MLFlowLogger":
                if node.get("run_name") is None:
                    node.run_name = run_name(output_dir)
                tags = node.get("tags")
                own = {str(k): v for k, v in tags.items()} if isinstance(tags, DictConfig) else {}  # resolved
                # Tags go to the tracking server and its UI as they are: a secret in one (a key named like a
                # secret, a password in a URL, also through ${oc.env:...}) is masked, as in every file we write.
                node.tags = mask_values({**run_tags(output_dir), **own})
            elif kind == "WandbLogger":
                if node.get("name") is None:
                    node.name = run_name(output_dir)
                if node.get("group") is None:
                    node.group = sweep_name(output_dir)
                if node.get("settings") is None and any(holds_secret(arg) for arg in sys.argv):
                    # W&B stores the command line (sys.argv) with the run's system metadata, a password in a
                    # URL too; that metadata is left out then (sys.argv itself must stay: DDP re-runs it).
                    node.settings = {"x_disable_meta": True}
    return named
