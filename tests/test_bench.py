"""CI runs only smoke versions of the benchmarks: the scripts work and report every cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from config_snapshots import recipes_module, snapshot_path
from fmnist_lightning.config.files import CONF_DIR, project_root
from fmnist_lightning.training.provenance import cpu_model


@pytest.mark.slow
def test_benchmark_smoke(data_root: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(project_root() / "bench" / "throughput.py"),
        "--smoke",
        "--augs",
        "none",
        "--root",
        str(data_root),
        "--out",
        str(tmp_path),
        "--cli-override",
        "data.val_size=100",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "throughput.json").read_text())
    assert {(r["arm"], r["aug"]) for r in report["rows"]} == {
        ("notebook", "none"),
        ("batched", "none"),
        ("per_sample", "none"),
        ("floor", "none"),
    }
    assert all(r["median_img_per_s"] > 0 and r["peak_rss_mb"] > 0 and len(r["runs"]) == 1 for r in report["rows"])
    assert report["cpu"] and "| none |" in (tmp_path / "throughput.md").read_text()


@pytest.mark.slow
def test_export_latency_smoke(data_root: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(project_root() / "bench" / "export_latency.py"),
        "--smoke",
        "--models",
        "tinyvgg",
        "--root",
        str(data_root),
        "--out",
        str(tmp_path),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "export_latency.json").read_text())
    assert {(r["arm"], r["batch"]) for r in report["rows"]} == {
        (a, b) for a in ("eager", "ort_fp32", "ort_int8") for b in (1, 256)
    }
    assert all(r["median_ms"] > 0 and r["images_per_s"] > 0 for r in report["rows"]) and report["cpu"]
    assert "| tinyvgg | 256 |" in (tmp_path / "export_latency.md").read_text()


@pytest.mark.slow
def test_precision_bench_smoke(data_root: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        str(project_root() / "bench" / "precision.py"),
        "--smoke",
        "--models",
        "linear",
        "--batch",
        "32",
        "--root",
        str(data_root),
        "--out",
        str(tmp_path),
        "--cli-override",
        "data.val_size=100",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "precision.json").read_text())
    row = report["models"]["linear"]
    assert all(row[p]["median"] > 0 and len(row[p]["runs"]) == 1 for p in ("32-true", "bf16-mixed"))
    assert row["speedup"] == pytest.approx(row["bf16-mixed"]["median"] / row["32-true"]["median"])
    assert report["cpu"] and report["auto"] in ("32-true", "bf16-mixed")
    assert "| linear |" in (tmp_path / "precision.md").read_text()


@pytest.mark.slow
def test_presets_bench_runs_the_baseline_from_a_worktree_of_its_commit(data_root: Path, tmp_path: Path) -> None:
    def worktrees() -> list[str]:
        return subprocess.run(
            ["git", "worktree", "list"], cwd=project_root(), capture_output=True, text=True
        ).stdout.splitlines()

    before = worktrees()
    tiny = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_test_batches=2"]
    cmd = [
        sys.executable,
        str(project_root() / "bench" / "presets.py"),
        "--preset",
        "speedrun",
        "--seeds",
        "0",
        "--baseline",
        "HEAD",
        "--root",
        str(data_root),
        "--out",
        str(tmp_path),
        *tiny,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "speedrun.json").read_text())
    for arm in ("baseline", "new"):
        (run,) = report[arm]
        assert run["seed"] == 0 and 0 <= run["test_acc"] <= 1 and run["wall_time_s"] > 0 and run["peak_rss_mb"] > 0
    assert report["ratio"] == pytest.approx(report["new"][0]["wall_time_s"] / report["baseline"][0]["wall_time_s"])
    assert "speedrun at HEAD" in (tmp_path / "speedrun.md").read_text()
    assert worktrees() == before  # the baseline's worktree is gone again


def test_every_recipes_row_composes_with_its_overrides() -> None:
    # A pilot or ablation row that no longer composes would only fail 15 minutes into a bench run. Each row's
    # composed config is frozen in tests/fixtures/resolved_configs/, and test_presets.py checks every frozen
    # config against a fresh compose; so here each override is checked to land where the row means it to.
    recipes = recipes_module()
    for name, row in recipes.ALL_ROWS.items():
        overrides = recipes.row_overrides(row, 10)
        frozen = yaml.safe_load(snapshot_path(f"recipes-{name}").read_text())
        assert frozen["overrides"] == [*recipes.BASE[:1], *overrides, *recipes.VALIDATION], name
        cfg = OmegaConf.create(frozen["config"])
        assert cfg.data.val_size == 5000 and cfg.test is False, name
        for override in overrides:
            key, value = override.lstrip("+").split("=", 1)
            if "." in key:
                assert OmegaConf.select(cfg, key, default="<missing>") == yaml.safe_load(value), (name, key)
            else:
                # A group choice: an option file of that group (the compose itself is test_presets.py's).
                assert (CONF_DIR / key / f"{value}.yaml").is_file(), (name, key, value)


@pytest.mark.slow
def test_roofline_smoke(data_root: Path, tmp_path: Path) -> None:
    # The real CLI with the probe callback: timed steps, profiled steps, and each part of the step found.
    cmd = [
        sys.executable,
        str(project_root() / "bench" / "roofline.py"),
        "--presets",
        "speedrun",
        "--warmup",
        "2",
        "--steps",
        "3",
        "--quick",
        "--root",
        str(data_root),
        "--out",
        str(tmp_path),
        "data.batch_size=64",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "roofline.json").read_text())
    row = report["presets"][0]
    assert row["batch_size"] == 64 and row["steps"] == 3 and row["achieved_gflops"] > 0
    parts = row["breakdown_s"]
    assert parts["forward conv"] > 0 and parts["backward conv"] > 0
    assert parts["optimizer"] > 0 and parts["augmentation"] > 0  # Muon's step; shift_flip's batched ops
    assert sum(parts.values()) == pytest.approx(row["profiled_s"], rel=0.05)
    assert report["peak"]["fp32"]["peak"] > 0
    assert report["peak"]["bf16"]["peak"] is None or report["peak"]["bf16"]["peak"] > 0  # measured where native
    assert "| speedrun |" in (tmp_path / "roofline.md").read_text()


def earlier_report(overrides: list[str], run: dict[str, Any]) -> dict[str, Any]:
    """A recipes.json of one cell (small_e80, seed 0), as an earlier bench run wrote it."""
    return {
        "cpu": cpu_model(),
        "epochs": 10,
        "command": "python bench/recipes.py --rows small_e80",
        "overrides": {"small_e80": overrides},
        "rows": {"small_e80": [{"seed": 0, "val_acc_best": 0.9396, "wall_time_s": 839.0, **run}]},
    }


def test_recipes_reuse_matches_cells_by_the_settings_they_composed_to() -> None:
    recipes = recipes_module()
    row = recipes.ALL_ROWS["small_e80"]
    digest = recipes.settings_digest(recipes.row_overrides(row, 10))
    # The same settings written another way: a key set to the value the row composes to anyway.
    batch = yaml.safe_load(snapshot_path("recipes-small_e80").read_text())["config"]["data"]["batch_size"]
    spelled_out = [*row, f"data.batch_size={batch}"]
    assert recipes.settings_digest(recipes.row_overrides(spelled_out, 10)) == digest
    assert recipes.settings_digest(recipes.row_overrides([*row, "data.batch_size=128"], 10)) != digest
    assert recipes.settings_digest(["optim=no_such_optimizer"]) is None

    def reused(report: dict[str, Any]) -> dict[str, Any] | None:
        return recipes.reused([report], row, 10, 0, digest)

    # Another text, the same digest: reused. The same text, but the run composed to other settings then: not.
    assert reused(earlier_report(spelled_out, {"settings": digest}))["reused_from"] == "small_e80"
    changed = earlier_report(row, {"settings": "0" * 64})
    assert reused(changed) is None
    assert recipes.missed([changed], "small_e80", row, 10, 0) == [
        "python bench/recipes.py --rows small_e80: same overrides, composed to other settings"
    ]
    # Cells measured before digests were recorded match by their text, and another seed never matches.
    assert reused(earlier_report(row, {}))["val_acc_best"] == 0.9396
    assert recipes.reused([earlier_report(row, {})], row, 10, 1, digest) is None
    renamed = [o.replace("optim=muon_recipe", "optim=muon") for o in row]
    assert reused(earlier_report(renamed, {})) is None
    (note,) = recipes.missed([earlier_report(renamed, {})], "small_e80", row, 10, 0)
    assert note.endswith("optim=muon -> optim=muon_recipe, measured before settings were recorded")


def test_recipes_plan_says_which_cells_run_again_before_any_does(tmp_path: Path) -> None:
    # The real CLI: an earlier report whose cell was measured under an option's older name.
    row = recipes_module().ALL_ROWS["small_e80"]
    renamed = [o.replace("optim=muon_recipe", "optim=muon") for o in row]
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(earlier_report(renamed, {})))
    out = tmp_path / "out"
    cmd = [sys.executable, str(project_root() / "bench" / "recipes.py"), "--rows", "small_e80", "--seeds", "0"]
    result = subprocess.run(
        [*cmd, "--reuse", str(earlier), "--out", str(out), "--plan"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    assert "run small_e80 seed 0" in lines
    assert any("not reused from" in line and "optim=muon -> optim=muon_recipe" in line for line in lines), lines
    assert not out.exists()  # a plan runs nothing and writes nothing
    earlier.write_text(json.dumps(earlier_report(row, {})))
    result = subprocess.run(
        [*cmd, "--reuse", str(earlier), "--out", str(out), "--plan"], capture_output=True, text=True, timeout=120
    )
    assert "reuse small_e80 seed 0: measured as small_e80" in result.stderr.splitlines(), result.stderr[-2000:]
