"""The GPU check's stage b: the batched augmentation ops on the device against the CPU, op by op, from the
same seed (bench/gpu_check.py's docstring says how; tests/test_cuda.py runs the same comparison)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SAME_PARAMS_MAX_SHARE = 1e-3  # pixels differing by more than 1/255 with identical parameters
NATIVE_MAX_Z = 5.0  # |z| of the native-draws test: both devices' draws follow one distribution


@contextlib.contextmanager
def host_draws() -> Iterator[None]:
    """Every random draw below goes to the CPU generator, then moves to the tensor's device.

    On the CPU the wrappers call the real functions unchanged, so a CPU run and a device run from
    the same seed consume the same CPU random stream: both apply the very same parameters.
    """
    import torch

    real = {name: getattr(torch, name) for name in ("rand", "randn", "randint", "rand_like", "randn_like")}
    real_uniform, real_normal = torch.Tensor.uniform_, torch.Tensor.normal_

    def on_host(device: Any) -> bool:
        return device is None or torch.device(device).type == "cpu"

    def sized(name: str) -> Callable[..., Any]:
        def draw(*args: Any, device: Any = None, **kwargs: Any) -> Any:
            if on_host(device):
                return real[name](*args, device=device, **kwargs)
            return real[name](*args, **kwargs).to(device)

        return draw

    def like(name: str) -> Callable[..., Any]:
        def draw(x: Any, **kwargs: Any) -> Any:
            device = kwargs.pop("device", None) or x.device
            if on_host(device):
                return real[name](x, **kwargs)
            return real[name](x.cpu(), **kwargs).to(device)

        return draw

    def in_place(real_fn: Callable[..., Any]) -> Callable[..., Any]:
        def draw(self: Any, *args: Any, **kwargs: Any) -> Any:
            if on_host(self.device):
                return real_fn(self, *args, **kwargs)
            return self.copy_(real_fn(torch.empty(self.shape, dtype=self.dtype), *args, **kwargs))

        return draw

    patched = {
        "rand": sized("rand"),
        "randn": sized("randn"),
        "randint": sized("randint"),
        "rand_like": like("rand_like"),
        "randn_like": like("randn_like"),
    }
    try:
        for name, fn in patched.items():
            setattr(torch, name, fn)
        torch.Tensor.uniform_, torch.Tensor.normal_ = in_place(real_uniform), in_place(real_normal)
        yield
    finally:
        for name, fn in real.items():
            setattr(torch, name, fn)
        torch.Tensor.uniform_, torch.Tensor.normal_ = real_uniform, real_normal


def augmentation_ops() -> list[tuple[str, Any]]:
    """Every batched op, with settings that make it change many images (p=0.5 where it has a p)."""
    from torchvision.transforms import v2

    from fmnist_lightning.data import transforms as T
    from fmnist_lightning.data.policies import BatchedPolicy

    return [
        ("RandomHorizontalFlip(p=0.5)", T.RandomHorizontalFlip(p=0.5)),
        ("RandomVerticalFlip(p=0.5)", T.RandomVerticalFlip(p=0.5)),
        ("RandomRotation(15)", T.RandomRotation(degrees=15.0)),
        ("RandomCrop(padding=4)", T.RandomCrop(padding=4)),
        ("RandomErasing(p=0.5)", T.RandomErasing(p=0.5)),
        ("GaussianNoise(sigma=0.1, p=0.5)", T.GaussianNoise(sigma=0.1, p=0.5)),
        ("GaussianBlur(5, sigma 0.1-2, p=0.5)", T.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0), p=0.5)),
        ("BatchedPolicy(RandAugment)", BatchedPolicy(v2.RandAugment())),
        ("BatchedPolicy(TrivialAugmentWide)", BatchedPolicy(v2.TrivialAugmentWide())),
        ("BatchedPolicy(AutoAugment)", BatchedPolicy(v2.AutoAugment())),
    ]


def load_images(root: Path, n: int) -> Any:
    """The first ``n`` training images as float ``[n, 1, 28, 28]`` in [0, 1] (read straight from the IDX file)."""
    import numpy as np
    import torch

    raw = (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    count = int.from_bytes(raw[4:8], "big")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, 1, 28, 28)
    index = np.arange(n) % count  # a small dataset is repeated up to n
    return torch.from_numpy(images[index].astype(np.float32) / 255.0)


def compare_op(op: Any, x: Any, device: str, seed: int) -> dict[str, Any]:
    """One op on ``device`` against the CPU: with identical parameters, and with each device's own draws."""
    import torch

    x_dev = x.to(device)
    cuda = torch.device(device).type == "cuda"
    torch.manual_seed(seed)
    with host_draws():
        reference = op(x)
    torch.manual_seed(seed)
    cuda_seeded = torch.cuda.get_rng_state(torch.device(device)) if cuda else None
    with host_draws():
        same = op(x_dev).cpu()
    # Proof that no draw reached the device's generator: its state is where the seed left it.
    host_only = (not cuda) or torch.equal(torch.cuda.get_rng_state(torch.device(device)), cuda_seeded)
    diff = (same - reference).abs()
    share = float((diff > 1 / 255).float().mean())

    def change(out: Any) -> Any:
        return (out.cpu() - x).abs().flatten(1).mean(1).double()

    torch.manual_seed(seed)
    cpu_change = change(op(x))
    torch.manual_seed(seed)
    dev_change = change(op(x_dev))
    n = len(x)
    se = math.sqrt(float(cpu_change.var()) / n + float(dev_change.var()) / n)
    gap = float(dev_change.mean() - cpu_change.mean())
    z = 0.0 if gap == 0 else (gap / se if se > 0 else math.inf)
    return {
        "max_abs_diff": float(diff.max()),
        "share_px_over_1_255": share,
        "host_draws_only": host_only,
        "mean_change_cpu": float(cpu_change.mean()),
        "mean_change_device": float(dev_change.mean()),
        "z": z,
        "ok": host_only and share <= SAME_PARAMS_MAX_SHARE and abs(z) <= NATIVE_MAX_Z,
    }


def stage_augmentation(root: Path, device: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    x = load_images(root, n)
    rows = []
    for name, op in augmentation_ops():
        start = time.perf_counter()
        result = compare_op(op, x, device, seed)
        rows.append({"op": name, **result, "seconds": round(time.perf_counter() - start, 2)})
        print(
            f"  {name}: {'ok' if result['ok'] else 'FAILED'} (share>1/255 {result['share_px_over_1_255']:.2e}, "
            f"z {result['z']:+.2f})",
            flush=True,
        )
    return rows
