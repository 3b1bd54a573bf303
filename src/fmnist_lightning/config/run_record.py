"""The run record: the resolved config as plain Python (stored in every checkpoint) and its TensorBoard hparams."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.command_line import override_key
from fmnist_lightning.config.masking import mask_values

# The key under which every checkpoint stores the run record (``training.callbacks.config_in_checkpoints``).
CONFIG_KEY = "fmnist_config"

# Groups whose chosen option names a run (model=tinyvgg, aug=light, ...).
CHOICE_GROUPS = ("experiment", "model", "aug", "mix", "optim", "sched", "data", "trainer", "debug")
# Config sections whose scalar leaves are hyperparameters worth comparing across runs.
HPARAM_SECTIONS = ("model", "optim", "sched", "module", "data")
_NOT_HPARAMS = {"root", "download", "augmentation", "num_workers", "pin_memory", "config", "optimizer", "scheduler"}


def hydra_choices(groups: tuple[str, ...] | None = CHOICE_GROUPS) -> dict[str, str]:
    """The option picked in each of ``groups`` (None: every group), when running under Hydra (CLI or compose)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {str(g): str(c) for g, c in choices.items() if c is not None and (groups is None or g in groups)}


def run_record(cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """The resolved config as plain Python (safe to store in a weights-only checkpoint), plus choices."""
    # Hydra's own node (present under compose) holds job-time values that are not set yet.
    app = OmegaConf.masked_copy(cfg, [str(key) for key in cfg if key != "hydra"])
    record = OmegaConf.to_container(app, resolve=True, throw_on_missing=False)
    assert isinstance(record, dict)
    record["choices"] = hydra_choices()
    record["overrides"] = job_overrides()
    record.update(extra)
    # Stored in checkpoints and run.json, logged as tracker params: never a password (the run keeps cfg's values).
    return mask_values(record)


def job_overrides() -> list[str]:
    """The job's own command-line overrides (what a sweep varied), when running under Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [str(o) for o in HydraConfig.get().overrides.task]


def _flatten(prefix: str, node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                out[f"{prefix}/class"] = str(value).rsplit(".", 1)[-1]
            elif not str(key).startswith("_") and key not in _NOT_HPARAMS:
                _flatten(f"{prefix}/{key}", value, out)
    elif isinstance(node, (bool, int, float, str)):
        out[prefix] = node
    else:  # None and lists: TensorBoard takes only scalars
        out[prefix] = str(node)


def hparams_from_record(record: dict[str, Any]) -> dict[str, Any]:
    """Flat ``{name: scalar}`` hyperparameters for TensorBoard's HPARAMS tab."""
    out: dict[str, Any] = {f"choice/{g}": c for g, c in record.get("choices", {}).items()}
    for section in HPARAM_SECTIONS:
        _flatten(section, record.get(section), out)
    out["seed"] = str(record.get("seed"))
    trainer = record.get("trainer", {})
    for key in ("max_epochs", "precision", "accumulate_grad_batches"):
        out[f"trainer/{key}"] = str(trainer.get(key))
    for key, value in record.get("model_info", {}).items():
        out[f"model_info/{key}"] = value
    # The job's own overrides first, so tables of runs open on what a sweep varied.
    first = [name for name in job_hparam_names(record) if name in out]
    return {**{name: out[name] for name in first}, **out}


def job_hparam_names(record: dict[str, Any]) -> list[str]:
    """The hparam names the job's own overrides set, in command-line order (``optim.lr=0.01`` -> ``optim/lr``)."""
    return list(dict.fromkeys(_hparam_name(o) for o in record.get("overrides", [])))


def _hparam_name(override: str) -> str:
    """``optim.lr=0.01`` -> ``optim/lr``; a group choice ``model=lenet`` -> ``choice/model``."""
    key = override_key(override)
    return f"choice/{key}" if "." not in key and "/" not in key else key.replace(".", "/")
