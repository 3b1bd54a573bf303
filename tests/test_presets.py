"""Experiment presets compose with any group choice: a preset selects options and pins no key of a
group whose option it selects, and every preset and bench row still resolves as it did."""

from __future__ import annotations

import pytest
import yaml

from config_snapshots import cases, resolved, snapshot_path

CASES = cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_preset_and_bench_row_resolve_as_frozen(name: str) -> None:
    # The published tables (README, docs/results.md, bench/results/) were measured with these configs.
    frozen = yaml.safe_load(snapshot_path(name).read_text())
    assert resolved(CASES[name]) == frozen["config"], (
        f"{name} no longer resolves as frozen in {snapshot_path(name).name}; if the change is deliberate, "
        "regenerate with `python tests/config_snapshots.py` and say so in the commit"
    )


def test_every_preset_and_bench_row_is_frozen() -> None:
    assert {p.stem for p in snapshot_path("x").parent.glob("*.yaml")} == set(CASES)
