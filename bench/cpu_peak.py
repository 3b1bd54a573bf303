"""This CPU's arithmetic peak in GFLOP/s, per dtype: matmul and conv2d at the shapes that matter, on 2 threads.

Used by ``bench/roofline.py``, which records the conv2d shapes of the presets' networks. bf16 is measured only
where the CPU computes it natively (AMX or AVX-512 BF16, as ``trainer.precision=auto`` decides): elsewhere it is
emulated in software, about 60x slower than fp32 on a Zen 3, and no preset trains in it.
"""

from __future__ import annotations

import time
from typing import Any

import torch

# How long each peak measurement takes: the best of ROUNDS rounds, each at least MIN_S seconds.
TIMING = {"min_s": 0.5, "rounds": 5}


def seconds_per_call(fn: Any) -> float:
    """The best of the rounds of timing ``fn`` (after 3 warm-up calls), each round at least ``min_s`` long."""
    min_s = TIMING["min_s"]
    for _ in range(3):
        fn()
    calls, best = 1, float("inf")
    for _ in range(int(TIMING["rounds"])):
        while True:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = time.perf_counter() - start
            if elapsed >= min_s:
                break
            calls *= 2
        best = min(best, elapsed / calls)
    return best


def matmul_gflops(n: int, dtype: torch.dtype) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / seconds_per_call(lambda: torch.mm(a, b)) / 1e9


def conv_gflops(shape: list[Any], dtype: torch.dtype) -> float:
    """Forward conv2d GFLOP/s at one recorded layer shape."""
    n, c, h, w, out, k, stride, padding, groups = shape
    conv = torch.nn.Conv2d(c, out, k, stride=stride, padding=padding, groups=groups, bias=False).to(dtype)
    x = torch.randn(n, c, h, w, dtype=dtype)
    with torch.no_grad():
        y = conv(x)
        flops = 2 * y.numel() * (c // groups) * k * k
        return flops / seconds_per_call(lambda: conv(x)) / 1e9


def peak(shapes: list[list[Any]]) -> dict[str, Any]:
    """This CPU's GFLOP/s at the shapes that matter, per dtype; the peak is the best of them."""
    from fmnist_lightning.training.precision import fast_precision

    torch.set_num_threads(2)
    table: dict[str, Any] = {}
    dtypes = [("fp32", torch.float32)]
    if fast_precision("cpu") == "bf16-mixed":
        dtypes.append(("bf16", torch.bfloat16))
    else:
        # Emulated in software (about 60x slower than fp32 on a Zen 3), and precision=auto trains in fp32 here.
        table["bf16"] = {"rows": {}, "peak": None, "note": "no native bf16 on this CPU (no AMX or AVX-512 BF16)"}
    for name, dtype in dtypes:
        with torch.inference_mode():
            rows = {f"matmul {n}x{n}": matmul_gflops(n, dtype) for n in (1024, 2048)}
            convs = [conv_gflops(shape, dtype) for shape in unique(shapes)]
        rows["conv2d, best of the presets' layers"] = max(convs)
        rows["conv2d, median of the presets' layers"] = sorted(convs)[len(convs) // 2]
        table[name] = {"rows": {k: round(v, 1) for k, v in rows.items()}, "peak": round(max(rows.values()), 1)}
    return table


def unique(shapes: list[list[Any]]) -> list[list[Any]]:
    return [list(s) for s in dict.fromkeys(tuple(s) for s in shapes)]
