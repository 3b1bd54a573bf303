"""trainer.precision=auto: bf16 autocast where the CPU (or GPU) computes bfloat16 natively."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fmnist_lightning.train import train
from fmnist_lightning.training import checkpoint_files
from fmnist_lightning.training.precision import cpu_flags, fast_precision


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == frozenset()  # no /proc (macOS): no flags, float32


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"avx2", "fma"}, "32-true"),  # AVX2-only: bf16 is emulated, slower than float32
        ({"avx2", "avx512f"}, "32-true"),
        ({"avx2", "avx512f", "avx512_bf16"}, "bf16-mixed"),  # e.g. AMD Zen 4
        ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bf16-mixed"),  # Intel Sapphire Rapids+
    ],
)
def test_cpu_precision_follows_the_bf16_flags(flags: set[str], expected: str) -> None:
    assert fast_precision("cpu", frozenset(flags)) == expected


def test_auto_precision_trains_and_records_the_concrete_value(make_cfg) -> None:
    cfg = make_cfg(
        "trainer.precision=auto",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0
    expected = fast_precision("cpu")
    assert cfg.trainer.precision == expected
    # The checkpoint stores what ran, so evaluate and predict use the same autocast.
    stored = checkpoint_files.run_config(torch.load(metrics["best_model_path"], weights_only=True))
    assert stored["trainer"]["precision"] == expected


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_gpu_precision_asks_for_native_bf16(monkeypatch: pytest.MonkeyPatch, native_bf16: bool, expected: str) -> None:
    # No GPU here: torch's two device queries stand in for one. On a pre-Ampere card torch answers True
    # when emulation counts, which would pick slow emulated bf16.
    asked: dict[str, bool] = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["emulation"] = including_emulation
        return native_bf16 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert fast_precision("auto") == expected and asked["emulation"] is False
