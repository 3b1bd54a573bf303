"""What differs between Hydra 1.3 and 1.4 for this project: ``version_base`` and instantiate()'s execution whitelist.

Hydra 1.3 needs ``version_base="1.3"`` (without it: a warning, and Hydra 1.1's defaults); Hydra 1.4 deprecates the
argument (any value, None included, warns) and instead checks every config-selected ``_target_`` (instantiate(),
Hydra's own callbacks, logging) against an execution whitelist: without one it warns, and Hydra 1.5 will refuse.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from hydra.utils import instantiate

# Where a config's _target_ may point. A trailing ".*" allows a package and everything under it; Hydra 1.4 checks
# both the dotted name in the config and the module of the object it resolves to (and of a callable it returns),
# as config.checks does before anything is imported, on 1.3 too.
PROJECT_TARGETS: tuple[str, ...] = (
    "fmnist_lightning.*",
    "lightning.pytorch.*",
    "torch.optim.*",
    "torchvision.transforms.*",
    "optuna.samplers.*",
    "optuna.pruners.*",
    # fmnist-lr-find turns the sweep-summary callback off with Hydra's no-op base class.
    "hydra.experimental.callback.Callback",
)
# More entries (same syntax, comma-separated) from whoever starts the command, never from a config: the bench
# scripts' timing callbacks (step_timer.*), the tests' own callbacks. A config is data; its caller is code.
TRUSTED_TARGETS_ENV = "FMNIST_TRUSTED_TARGETS"
TARGETS: tuple[str, ...] = PROJECT_TARGETS + tuple(
    entry.strip() for entry in os.environ.get(TRUSTED_TARGETS_ENV, "").split(",") if entry.strip()
)

HAS_WHITELIST = "_execution_whitelist_" in inspect.signature(instantiate).parameters

# @hydra.main(config_path=..., config_name=..., **MAIN_ARGS)
MAIN_ARGS: dict[str, Any] = {"execution_whitelist": TARGETS} if HAS_WHITELIST else {"version_base": "1.3"}
# initialize_config_dir(config_dir=..., **INIT_ARGS)  (it takes no whitelist: pass ALLOWED to instantiate)
INIT_ARGS: dict[str, Any] = {} if HAS_WHITELIST else {"version_base": "1.3"}
# instantiate(node, **ALLOWED)
ALLOWED: dict[str, Any] = {"_execution_whitelist_": TARGETS} if HAS_WHITELIST else {}


def allowed(target: str) -> bool:
    """Whether ``TARGETS`` lets a config build ``target`` (as Hydra 1.4 matches: exact, or a package's ``.*``)."""
    return any(target == entry or (entry.endswith(".*") and target.startswith(entry[:-1])) for entry in TARGETS)
