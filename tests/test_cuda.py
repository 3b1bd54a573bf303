"""CUDA tests (marker ``cuda``): skipped without a CUDA device. On a GPU machine, ``pytest -m cuda``
runs them; bench/gpu_check.sh does, as its stage a (docs/gpu.md)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# bench/gpu_check.py: the comparison the GPU check reports (its stage b), tested here op by op.
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

OP_NAMES = [name for name, _ in gpu_check.augmentation_ops()]


@pytest.mark.parametrize("index", range(len(OP_NAMES)), ids=OP_NAMES)
def test_batched_op_on_gpu_matches_cpu(data_root: Path, index: int) -> None:
    """Same seed: with the parameters drawn on the host, the GPU computes what the CPU does; with each
    device's own generator, the op changes images by the same amount on average."""
    name, op = gpu_check.augmentation_ops()[index]
    result = gpu_check.compare_op(op, gpu_check.load_images(data_root, 2048), "cuda", seed=0)
    assert result["host_draws_only"], f"{name}: a random draw went to the CUDA generator"
    assert result["share_px_over_1_255"] <= gpu_check.SAME_PARAMS_MAX_SHARE, result
    assert abs(result["z"]) <= gpu_check.NATIVE_MAX_Z, result


def test_fast_dev_run_on_gpu_keeps_the_data_on_the_device(data_root: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.json"
    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning",
        "trainer=gpu",
        "debug=fast_dev_run",
        "trainer.accelerator=gpu",
        "data.on_device=true",
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
    where = json.loads(probe.read_text())
    assert where["model"].startswith("cuda") and where["batch"].startswith("cuda"), where
    assert where["train_images"].startswith("cuda"), f"data.on_device=true left the training images on {where}"


def test_precision_auto_picks_bf16_mixed_on_ampere_and_later() -> None:
    from fmnist_lightning.training.precision import fast_precision

    major, _ = torch.cuda.get_device_capability()
    expected = "bf16-mixed" if major >= 8 else "16-mixed"
    assert fast_precision("gpu") == expected
    assert fast_precision("auto") == expected
