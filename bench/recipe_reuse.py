"""Which cells of earlier ``bench/recipes.py`` reports measured what a row would run now: by the digest of the config
each cell composed to, or, for cells measured before digests were recorded, by their overrides' text."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from recipe_rows import BASE, VALIDATION, row_overrides

# Hydra's run directory in a composed config: a new one per run, so no part of what a run trains.
RUN_DIR = "<run dir>"


def composed_settings(overrides: list[str]) -> dict[str, Any]:
    """The job config (no ``hydra`` node) that ``overrides`` compose to, every interpolation resolved, with Hydra's run
    directory (a new one per run) as a fixed stand-in. The frozen configs of tests/config_snapshots.py are these."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from fmnist_lightning.config.files import CONF_DIR
    from fmnist_lightning.config.hydra_compat import INIT_ARGS

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
            cfg = compose("config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = RUN_DIR
    settings = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(settings, dict)
    return settings


def settings_digest(overrides: list[str]) -> str | None:
    """A digest of the job config a row's cell composes to (``BASE``, ``overrides``, ``VALIDATION``; no seed). Two
    cells with the same digest train the same thing whatever their overrides' text, and an option whose meaning
    changed since (``optim=muon`` once meant what ``optim=muon_recipe`` means now) no longer matches by its name.
    None: the overrides no longer compose (an option since removed)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        settings = composed_settings([*BASE, *overrides, *VALIDATION])
    except (HydraException, OmegaConfBaseException):
        return None
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def reused(
    reports: list[dict[str, Any]], overrides: list[str], epochs: int, seed: int, digest: str | None
) -> dict[str, Any] | None:
    """A cell an earlier report measured with the same settings and seed: by the digest its run recorded
    (``settings``), or, for cells measured before digests were recorded, by the same overrides and length."""
    want = set(row_overrides(overrides, epochs))
    for report in reports:
        for name, runs in report["rows"].items():
            same_text = set(row_overrides(report["overrides"][name], report["epochs"])) == want
            for run in runs:
                if run["seed"] != seed or "error" in run:
                    continue
                if (run["settings"] == digest and digest is not None) if "settings" in run else same_text:
                    return run | {"reused_from": name}
    return None


def missed(reports: list[dict[str, Any]], name: str, overrides: list[str], epochs: int, seed: int) -> list[str]:
    """Why an earlier report's cell of the same row name and seed is not reused: its overrides, against the row's."""
    want = row_overrides(overrides, epochs)
    notes = []
    for report in reports:
        for run in report["rows"].get(name, []):
            if run["seed"] == seed and "error" not in run:
                had = row_overrides(report["overrides"][name], report["epochs"])
                gone, new = [o for o in had if o not in want], [o for o in want if o not in had]
                changed = f"{' '.join(gone) or '-'} -> {' '.join(new) or '-'}" if gone or new else "same overrides"
                why = "composed to other settings" if "settings" in run else "measured before settings were recorded"
                notes.append(f"{report['command']}: {changed}, {why}")
    return notes
