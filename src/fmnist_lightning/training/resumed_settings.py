"""Whether a checkpoint's optimizer and schedule can go on under this run's settings.

``trainer.fit(ckpt_path=...)`` restores the optimizer's and the scheduler's state from the file, hyperparameters
included: each parameter group's rate, weight decay and momentum, OneCycle's peak and floor, a cosine's base
rates. So an ``optim.*`` or ``sched.*`` value that differs from the run's own would be printed in the header and
stored in the run's config, and then silently not used; another ``optim=`` or ``sched=`` would be handed state of
a different kind (a crash inside torch at the first step, or a schedule that starts from another one's rates).
Such a line is refused before any data is read. What resuming may change is the run's length: the schedule's
length keys are planned from it (``training.schedule_length``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.config.checks import shown_value
from fmnist_lightning.config.run_record import hydra_choices
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.training.checkpoint_files import load_checkpoint, run_config

# The nodes whose values the restored optimizer and scheduler hold.
RESTORED = ("optim", "sched", "module.param_groups")
# A schedule's length, planned from the run's (a resume may train longer): not held by the restored state.
LENGTH_KEYS = frozenset({"T_max", "total_steps", "epochs", "steps_per_epoch"})
SHOWN = 3


def check_resumed_settings(cfg: DictConfig, ckpt_path: str | None) -> None:
    """Refuse continuing ``ckpt_path`` with optimizer or schedule settings other than those it was trained with."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return  # a missing file is reported by the check of its weights, with its own fix
    stored = run_config(load_checkpoint(ckpt_path))
    if not stored:
        return  # an empty record: nothing to compare (load_checkpoint refuses a file with none)
    changed: list[tuple[str, Any, Any]] = []
    for node in RESTORED:
        before = _flat(_select(stored, node), node)
        now = _flat(OmegaConf.to_container(OmegaConf.select(cfg, node, default={}) or {}, resolve=True), node)
        changed += [(key, before[key], now[key]) for key in before.keys() & now.keys() if before[key] != now[key]]
    if not changed:
        return
    changed.sort(key=lambda item: (not item[0].endswith("._target_"), item[0]))
    groups = {g: (stored.get("choices") or {}).get(g) for g in ("optim", "sched")}
    today = hydra_choices(("optim", "sched"))
    swapped = [f"{g}={today[g]} (the run's: {g}={c})" for g, c in groups.items() if c and today.get(g, c) != c]
    what = ", ".join(swapped) or ", ".join(
        f"{key}={shown_value(now)} (the run's: {shown_value(before)})" for key, before, now in changed[:SHOWN]
    )
    more = f" and {len(changed) - SHOWN} more" if not swapped and len(changed) > SHOWN else ""
    raise ConfigError(
        f"{ckpt_path} continues the optimizer and schedule it was saved with (Lightning restores their state), so "
        f"{what}{more} would not take effect; continue with the run's own settings (drop the change), or start a "
        "new run for new ones"
    )


def _select(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    """``{dotted key: value}`` of a node's leaves, the schedule's length keys left out."""
    if isinstance(node, dict):
        return {
            key: value
            for name, child in node.items()
            if name not in LENGTH_KEYS
            for key, value in _flat(child, f"{prefix}.{name}").items()
        }
    return {prefix: node}
