"""CI runs only a smoke version of the throughput benchmark: the script works and reports every cell."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fmnist_lightning.config import project_root


def test_benchmark_smoke(data_root: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(project_root() / "bench" / "throughput.py"), "--smoke", "--augs", "none", "light",
           "--root", str(data_root), "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "throughput.json").read_text())
    cells = {(r["variant"], r["aug"]) for r in report["rows"]}
    assert cells == {(v, a) for v in ("notebook", "per_sample", "batched") for a in ("none", "light")} | {("floor", "none")}
    assert all(r["img_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in report["rows"])
    assert "batched / notebook" in (tmp_path / "throughput.md").read_text()


def test_export_latency_smoke(data_root: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, str(project_root() / "bench" / "export_latency.py"), "--smoke", "--models", "tinyvgg",
           "--root", str(data_root), "--out", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "export_latency.json").read_text())
    assert {(r["arm"], r["batch"]) for r in report["rows"]} == {(a, b) for a in ("eager", "ort_fp32", "ort_int8")
                                                               for b in (1, 256)}
    assert all(r["median_ms"] > 0 and r["images_per_s"] > 0 for r in report["rows"]) and report["cpu"]
    assert "| tinyvgg | 256 |" in (tmp_path / "export_latency.md").read_text()
