"""bench/gpu_check.sh --cpu-smoke: every stage of the GPU check on the CPU, smallest sizes, so the script cannot rot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(folder: Path, name: str, module: str, wheels: Path) -> None:
    """A one-module pure-Python wheel, built offline with the setuptools this Python has."""
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text("")
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1"\n'
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--wheel-dir",
            str(wheels),
            str(folder),
        ],
        check=True,
        capture_output=True,
    )


@pytest.mark.slow
def test_gpu_check_cpu_smoke(data_root: Path, tmp_path: Path) -> None:
    # --wheels: a wheel of a package this Python lacks is installed into --site; one of a package it has
    # (a stand-in named pytest) is left out.
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    build_wheel(tmp_path / "missing", "fmnist-gpu-check-probe", "fmnist_gpu_check_probe", wheels)
    build_wheel(tmp_path / "present", "pytest", "not_really_pytest", wheels)
    cmd = [
        "bash",
        str(ROOT / "bench" / "gpu_check.sh"),
        "--cpu-smoke",
        "--root",
        str(data_root),
        "--work",
        str(tmp_path / "work"),
        "--wheels",
        str(wheels),
        "--site",
        str(site),
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable}
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    written = re.search(r"^wrote (\S+)/gpu_check\.md", result.stdout, re.M)
    assert written, result.stdout[-2000:]
    out = Path(written.group(1))
    # A smoke run's table goes to a temporary folder, never among the measured results.
    assert (ROOT / "bench" / "results" / "gpu").resolve() not in [out.resolve(), *out.resolve().parents]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["smoke"] and report["machine"]["torch"]
    assert report["installed_from_wheels"] == ["fmnist_gpu_check_probe-0.1-py3-none-any.whl"]
    assert (site / "fmnist_gpu_check_probe" / "__init__.py").is_file() and not (site / "not_really_pytest").exists()

    # a: the CUDA tests were collected and (on a machine without CUDA) skipped, not errored.
    assert report["cuda_tests"]["ok"] and "tests/test_cuda.py" in report["cuda_tests"]["files"]
    # b: every op, CPU against CPU from the same seed: identical, with every draw on the host.
    ops = {r["op"].split("(")[0] for r in report["augmentation"]}
    assert ops == {
        "RandomHorizontalFlip",
        "RandomVerticalFlip",
        "RandomRotation",
        "RandomCrop",
        "RandomErasing",
        "GaussianNoise",
        "GaussianBlur",
        "BatchedPolicy",
    }
    assert len(report["augmentation"]) == 10
    for row in report["augmentation"]:
        assert row["ok"] and row["max_abs_diff"] == 0.0 and row["z"] == 0.0 and row["mean_change_cpu"] > 0, row
    # c: the speedrun preset ran through the CLI and its metrics.json was read.
    speedrun = report["speedrun"]
    assert speedrun["ok"] and 0.0 <= speedrun["test_acc"] <= 1.0 and speedrun["wall_s"] > 0
    assert speedrun["precision"] in ("32-true", "bf16-mixed") and speedrun["epochs"] == 1
    # d: every cell of the grid timed, compiled cell included.
    cells = {(r["model"], r["precision"], r["channels_last"], r["compile"]) for r in report["throughput"]}
    assert cells == {("linear", p, cl, "false") for p in ("32-true", "bf16-mixed") for cl in ("false", "true")} | {
        ("linear", "32-true", "false", "true")
    }
    assert all(r["img_per_s"] > 0 for r in report["throughput"]), report["throughput"]
    table = (out / "gpu_check.md").read_text()
    assert all(f"| {stage} |" in table for stage in "abcd") and "GPU: none: CPU smoke run" in table
    shutil.rmtree(out)


def test_device_probe_reports_where_training_runs(data_root: Path, tmp_path: Path) -> None:
    """gpu_check.DeviceProbe, which the CUDA test reads, on the CPU: model, batches and training images there."""
    probe = tmp_path / "probe.json"
    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning",
        "debug=fast_dev_run",
        f"data.root={data_root}",
        "data.download=false",
        "data.val_size=100",
        f"paths.log_dir={tmp_path}",
        "trainer.enable_progress_bar=false",
        "+callbacks.device_probe._target_=gpu_check.DeviceProbe",
        f"+callbacks.device_probe.out={probe}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(probe.read_text()) == {
        "batch": "cpu",
        "model": "cpu",
        "precision": "32-true",
        "train_images": "cpu",
    }
