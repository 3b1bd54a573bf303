"""Where the configs live, and turning a composed config into plain records for checkpoints and hparams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def project_root() -> Path:
    """The checkout holding ``pyproject.toml`` (editable install), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else Path.cwd()


CONF_DIR = project_root() / "conf"

# Groups whose chosen option names a run (model=tinyvgg, aug=light, ...).
CHOICE_GROUPS = ("experiment", "model", "aug", "optim", "sched", "data", "trainer", "debug")
# Config sections whose scalar leaves are hyperparameters worth comparing across runs.
HPARAM_SECTIONS = ("model", "optim", "sched", "module", "data")
_NOT_HPARAMS = {"root", "download", "augmentation", "num_workers", "pin_memory", "config", "optimizer", "scheduler"}


def hydra_choices() -> dict[str, str]:
    """The option picked in each config group, when running under Hydra (CLI or compose)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {g: str(choices[g]) for g in CHOICE_GROUPS if g in choices}


def run_record(cfg: DictConfig, **extra: Any) -> dict[str, Any]:
    """The resolved config as plain Python (safe to store in a weights-only checkpoint), plus choices."""
    # Hydra's own node (present under compose) holds job-time values that are not set yet.
    app = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    record = OmegaConf.to_container(app, resolve=True, throw_on_missing=False)
    assert isinstance(record, dict)
    record["choices"] = hydra_choices()
    record["overrides"] = job_overrides()
    record.update(extra)
    return record


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
    key = override.partition("=")[0].lstrip("+~")
    return f"choice/{key}" if "." not in key and "/" not in key else key.replace(".", "/")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# (key, type check, type name, value check, what a valid value is, example). Checked before anything is
# built, so a typo'd value stops the run with one line instead of a traceback from deep inside torch.
VALUE_CHECKS: tuple[tuple[str, Any, str, Any, str, str], ...] = (
    ("optim.lr", is_number, "a number", lambda v: v > 0, "a learning rate > 0", "optim.lr=0.001"),
    ("optim.weight_decay", is_number, "a number", lambda v: v >= 0, "a weight decay >= 0", "optim.weight_decay=0.0005"),
    ("optim.momentum", is_number, "a number", lambda v: 0 <= v < 1, "a momentum in [0, 1)", "optim.momentum=0.9"),
    ("data.batch_size", _is_int, "an integer", lambda v: v >= 1, "a batch size >= 1", "data.batch_size=64"),
    ("data.eval_batch_size", _is_int, "an integer", lambda v: v >= 1, "a batch size >= 1", "data.eval_batch_size=512"),
    ("data.val_size", is_number, "a number", lambda v: v >= 0 and (_is_int(v) or v < 1),
     "a validation count >= 0 or a fraction in [0, 1)", "data.val_size=5000"),
    ("trainer.max_epochs", _is_int, "an integer", lambda v: v >= 1 or v == -1,
     "a number of epochs >= 1 (or -1 for no limit)", "trainer.max_epochs=10"),
    ("trainer.accumulate_grad_batches", _is_int, "an integer", lambda v: v >= 1, "an integer >= 1",
     "trainer.accumulate_grad_batches=1"),
    ("module.label_smoothing", is_number, "a number", lambda v: 0 <= v < 1, "a value in [0, 1)",
     "module.label_smoothing=0.1"),
    ("model.max_params", _is_int, "an integer", lambda v: v >= 1, "a parameter budget >= 1 (or null)",
     "model.max_params=100000"),
    ("seed", _is_int, "an integer", lambda v: True, "an integer seed (or null)", "seed=42"),
)


def check_values(cfg: DictConfig) -> None:
    """Refuse impossible or mistyped values of the common knobs, each with one line saying how to fix it."""
    from fmnist_lightning.errors import ConfigError

    for key, type_ok, type_name, value_ok, meaning, example in VALUE_CHECKS:
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if not type_ok(value):
            raise ConfigError(f"{key}={value!r} is {type(value).__name__}, not {type_name}: it must be {meaning}, e.g. {example}")
        if not value_ok(value):
            raise ConfigError(f"{key}={value} is impossible: it must be {meaning}, e.g. {example}")
