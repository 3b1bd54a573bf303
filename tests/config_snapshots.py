"""The resolved config of every experiment preset and every ``bench/recipes.py`` row, frozen in
``tests/fixtures/resolved_configs/``: the published tables stay reproducible only while each of them
composes to the same values (tests/test_presets.py).

Regenerate after a deliberate change of a preset or a row (and say in the commit what changed):
    python tests/config_snapshots.py
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SNAPSHOTS = Path(__file__).resolve().parent / "fixtures" / "resolved_configs"


@functools.cache
def recipes_module() -> Any:
    spec = importlib.util.spec_from_file_location("recipes", ROOT / "bench" / "recipes.py")
    assert spec is not None and spec.loader is not None
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    return recipes


def experiments() -> list[str]:
    return sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def cases() -> dict[str, list[str]]:
    """Snapshot name -> the overrides that compose it, as the CLI and bench/recipes.py pass them."""
    recipes = recipes_module()
    found = {f"experiment-{name}": [f"experiment={name}"] for name in experiments()}
    # bench/recipes.py's rows: its base, the row merged over its default length, its validation overrides.
    for name, row in recipes.ALL_ROWS.items():
        found[f"recipes-{name}"] = [*recipes.BASE, *recipes.row_overrides(row, 10), *recipes.VALIDATION]
    return found


def resolved(overrides: list[str]) -> dict[str, Any]:
    """The job config (no ``hydra`` node) composed from ``overrides``, every interpolation resolved: what
    ``bench/recipes.py`` digests to match a cell it may reuse."""
    return recipes_module().composed_settings(overrides)


def snapshot_path(name: str) -> Path:
    return SNAPSHOTS / f"{name}.yaml"


def write_all() -> None:
    SNAPSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SNAPSHOTS.glob("*.yaml"):
        old.unlink()
    for name, overrides in cases().items():
        text = yaml.safe_dump(
            {
                "overrides": [o for o in overrides if not o.startswith("hydra.searchpath")],
                "config": resolved(overrides),
            },
            sort_keys=False,
        )
        snapshot_path(name).write_text(text)
        print(snapshot_path(name).relative_to(ROOT))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    write_all()
