"""``trainer.precision=auto``: bfloat16 autocast where the hardware computes it natively, float32 elsewhere.

bf16 autocast is only a speed-up where matrix units take bfloat16 directly: Ampere and later GPUs, and
CPUs with AMX (Intel Sapphire Rapids and later) or AVX-512 BF16 (e.g. AMD Zen 4). On an AVX2-only CPU
the conversions cost more than they save, so float32 stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from fmnist_lightning.errors import ConfigError

log = logging.getLogger(__name__)

AUTO = "auto"
# /proc/cpuinfo flags of native bfloat16 dot products.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist, e.g. macOS)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def fast_precision(accelerator: str, flags: frozenset[str] | None = None) -> str:
    """The fastest autocast the device computes natively: bf16-mixed, 16-mixed (pre-Ampere GPUs) or 32-true.

    ``flags``: the CPU's feature flags (default: this machine's).
    """
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == AUTO and torch.cuda.is_available())
    if on_gpu:
        # Without including_emulation=False, pre-Ampere cards (V100, T4) answer True and get slow emulated bf16.
        return "bf16-mixed" if torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"
    if accelerator in ("cpu", AUTO) and BF16_CPU_FLAGS & (cpu_flags() if flags is None else flags):
        return "bf16-mixed"
    return "32-true"


def resolve_precision(cfg: DictConfig) -> None:
    """Replace ``trainer.precision=auto`` by the concrete value, so checkpoints and logs record what ran; refuse a GPU
    the machine has not, in the project's words (Lightning's are "No supported gpu backend found!")."""
    accelerator = str(cfg.trainer.get("accelerator", AUTO))
    # Lightning's "gpu" is Apple's MPS too.
    mps = accelerator == "gpu" and torch.backends.mps.is_available()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available() and not mps:
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(
            f"trainer.accelerator={accelerator}, but torch ({torch.__version__}, {build}) sees no CUDA GPU on this "
            "machine; use trainer.accelerator=auto (a GPU where there is one) or trainer=cpu"
        )
    if str(cfg.trainer.get("precision")) != AUTO:
        return
    precision = fast_precision(str(cfg.trainer.get("accelerator", AUTO)))
    log.info("trainer.precision=auto: %s on this machine", precision)
    with open_dict(cfg):
        cfg.trainer.precision = precision
