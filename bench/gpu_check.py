"""The GPU check: the project's CUDA path on one GPU, in one table. Run it through bench/gpu_check.sh.

Stages (each one's rows go into the same table, ``<out>/gpu_check.md``, with the GPU, driver,
torch and CUDA named; ``gpu_check.json`` holds every figure):

a. ``pytest -m cuda``: the suite's CUDA tests (tests/test_cuda.py and any other file that marks
   tests ``cuda``).
b. The batched augmentation ops (fmnist_lightning.data.transforms, and BatchedPolicy of
   fmnist_lightning.data.policies) on the GPU against the CPU, per op, same seed. CUDA and CPU
   generators give different numbers for the same seed, so two comparisons are made:
   1. same parameters: every random draw an op makes is taken from the CPU generator and moved to
      the device (``host_draws``: torch.rand/randint/randn_like/... and Tensor.uniform_ are wrapped
      for the call; the CUDA generator's state is checked to be untouched), so both devices apply
      the very same flips, angles, offsets, boxes, sigmas and noise. What differs is then only the
      device's arithmetic: the share of pixels that differ by more than 1/255 must stay under 0.1%
      (interpolation and blur differ in the last bits; a threshold op such as Solarize can flip a
      pixel that sits on its threshold);
   2. native draws: each device draws with its own generator, and the mean absolute change an op
      makes per image is compared between devices with a two-sample z-test (|z| <= 5): the device's
      draws follow the same distribution.
c. ``python -m fmnist_lightning experiment=speedrun trainer=gpu trainer.precision=auto``: wall
   time, the run's own wall_time_s and test accuracy from its metrics.json, and the precision
   ``auto`` chose.
d. Training throughput (images/s) through the CLI for model=compact and model=tinyvgg at 32-true
   and bf16-mixed, with model.channels_last false/true and model.compile false/true: the cells of
   bench/precision.py (aug=shift_flip, SGD, batch 256), one Hydra multirun per compile setting so
   every cell shares one process, timed by bench/step_timer.py's StepTimer with a CUDA
   synchronize at both ends of the timed steps.

``--cpu-smoke`` runs every stage on the CPU with the smallest sizes (a, the CUDA tests, then only
collect and skip) and writes its table to a temporary folder: tests/test_gpu_check.py runs it so
this script cannot rot. Its figures measure nothing.

``--wheels DIR`` (first, before anything else is imported): the wheels in DIR of packages this Python
lacks, or has at a version that pyproject.toml or another wheel in DIR does not accept, are installed
with ``pip install --no-index --no-deps --target <--site>``, and that folder is put on PYTHONPATH, ahead of site-packages, for this
script and every process it starts. Every other package is left as it is; a requirement of
pyproject.toml that is still not met is named in the table.

Usage: bench/gpu_check.sh [--wheels DIR] [--site DIR] [--root DATA] [--out DIR] [--work DIR] [--cpu-smoke]
                          [--stages abcd] [--budget-s 570]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPEEDRUN_TARGET = 0.93  # experiment=speedrun's goal: >= 93.0% official test accuracy
SAME_PARAMS_MAX_SHARE = 1e-3  # pixels differing by more than 1/255 with identical parameters
NATIVE_MAX_Z = 5.0


# --- packages: the machine's own, plus wheels of what it lacks --------------------------------------------------


def requirements() -> dict[str, Any]:
    """pyproject.toml's dependencies, by canonical name."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in deps}


def wheel_requirements(wheel: Path) -> list[Any]:
    """The Requires-Dist of a wheel that apply here without extras."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode("utf-8", "replace").splitlines()
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in lines if line.startswith("Requires-Dist:")]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def install_missing(wheels: Path, site: Path) -> list[str]:
    """Install into ``site`` the wheels in ``wheels`` of packages this Python lacks, or has at a version that
    pyproject.toml or another wheel there does not accept (when the wheel's own version is accepted; e.g.
    hydra-core's antlr4-python3-runtime==4.9.*); return their file names. ``site`` goes first on sys.path (and,
    via PYTHONPATH, in every process started later), ahead of site-packages."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.utils import canonicalize_name, parse_wheel_filename

    site.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(site))
    found = sorted(wheels.glob("*.whl"))
    asked: dict[str, list[Any]] = {}
    for req in [*requirements().values(), *(r for wheel in found for r in wheel_requirements(wheel))]:
        asked.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    chosen = []
    for wheel in found:
        name, wheel_version, _, _ = parse_wheel_filename(wheel.name)
        try:
            have = version(name)
        except PackageNotFoundError:
            chosen.append(wheel)
            continue
        specs = asked.get(canonicalize_name(name), [])
        if (not all(s.contains(have, prereleases=True) for s in specs)
                and all(s.contains(wheel_version, prereleases=True) for s in specs)):
            chosen.append(wheel)
    if chosen:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
               "--disable-pip-version-check", "--upgrade", "--target", str(site), *map(str, chosen)]
        subprocess.run(cmd, check=True)
    import importlib

    importlib.invalidate_caches()
    return [w.name for w in chosen]


def unmet_requirements() -> list[str]:
    """pyproject.toml's requirements that this Python's packages do not meet."""
    from importlib.metadata import PackageNotFoundError, version

    unmet = []
    for req in requirements().values():
        try:
            have = version(req.name)
        except PackageNotFoundError:
            unmet.append(f"{req} (missing)")
            continue
        if not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req} (have {have})")
    return unmet


# --- callbacks for the CLI runs (Hydra _target_=gpu_check.<name>; made on first use, so that importing this
# module needs neither torch nor Lightning) -------------------------------------------------------------------------


def _synced_step_timer() -> type:
    import torch
    from step_timer import StepTimer

    class SyncedStepTimer(StepTimer):
        """bench/step_timer.py's StepTimer, with the device's queue drained at both ends of the timed steps,
        and the peak GPU memory added to its timing.json."""

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            cuda = pl_module.device.type == "cuda"
            if cuda and batch_idx + 1 in (self.warmup, self.warmup + self.steps):
                torch.cuda.synchronize(pl_module.device)
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            if batch_idx + 1 == self.warmup + self.steps and self.out.is_file():
                record = json.loads(self.out.read_text())
                record["peak_gpu_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20 if cuda else None
                self.out.write_text(json.dumps(record))

    return SyncedStepTimer


def _device_probe() -> type:
    import lightning as L

    class DeviceProbe(L.Callback):
        """Writes where the first training batch, the model and the resident training images are."""

        def __init__(self, out: str) -> None:
            self.out = Path(out)

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx:
                return
            dataset = getattr(trainer.datamodule, "train_set", None) or getattr(trainer.train_dataloader, "dataset", None)
            images = getattr(dataset, "images", None)
            self.out.write_text(json.dumps({
                "batch": str(batch[0].device), "model": str(pl_module.device), "precision": str(trainer.precision),
                "train_images": str(images.device) if images is not None else "unknown",
            }))

    return DeviceProbe


def __getattr__(name: str) -> Any:
    if name == "SyncedStepTimer":
        return _synced_step_timer()
    if name == "DeviceProbe":
        return _device_probe()
    raise AttributeError(name)


# --- stage b: the batched augmentation ops on the device against the CPU ------------------------------------------


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

    patched = {"rand": sized("rand"), "randn": sized("randn"), "randint": sized("randint"),
               "rand_like": like("rand_like"), "randn_like": like("randn_like")}
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
        "max_abs_diff": float(diff.max()), "share_px_over_1_255": share, "host_draws_only": host_only,
        "mean_change_cpu": float(cpu_change.mean()), "mean_change_device": float(dev_change.mean()), "z": z,
        "ok": host_only and share <= SAME_PARAMS_MAX_SHARE and abs(z) <= NATIVE_MAX_Z,
    }


def stage_augmentation(root: Path, device: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    x = load_images(root, n)
    rows = []
    for name, op in augmentation_ops():
        start = time.perf_counter()
        result = compare_op(op, x, device, seed)
        rows.append({"op": name, **result, "seconds": round(time.perf_counter() - start, 2)})
        print(f"  {name}: {'ok' if result['ok'] else 'FAILED'} (share>1/255 {result['share_px_over_1_255']:.2e}, "
              f"z {result['z']:+.2f})", flush=True)
    return rows


# --- stages a, c, d: the suite's CUDA tests and the CLI ----------------------------------------------------------


def run(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, float, str]:
    """Run ``cmd`` from the checkout, output to ``log``; (exit status or None on time-out, seconds, output tail)."""
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            status: int | None = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                                timeout=max(timeout, 1)).returncode
        except subprocess.TimeoutExpired:
            status = None
    text = log.read_text(errors="replace")
    return status, time.perf_counter() - start, text[-4000:]


def stage_cuda_tests(work: Path, timeout: float) -> dict[str, Any]:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if re.search(r"mark\.cuda\b", p.read_text()))
    if not files:
        return {"files": [], "summary": "no test is marked cuda", "ok": False, "seconds": 0.0}
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", *files]
    status, seconds, tail = run(cmd, work / "pytest_cuda.log", timeout)
    summary = next((ln.strip("= ") for ln in reversed(tail.splitlines()) if re.search(r"\d+ (passed|failed|skipped|error)", ln)),
                   "timed out" if status is None else "no summary line")
    return {"files": files, "summary": summary, "exit": status, "ok": status == 0, "seconds": round(seconds, 1),
            "log": str(work / "pytest_cuda.log")}


def base_overrides(root: Path, log_dir: Path) -> list[str]:
    return [f"data.root={root}", "data.download=false", f"paths.log_dir={log_dir}", "trainer.enable_progress_bar=false"]


def stage_speedrun(root: Path, work: Path, smoke: bool, timeout: float, extra: list[str]) -> dict[str, Any]:
    log_dir = work / "speedrun"
    device = (["trainer.accelerator=cpu", "trainer.devices=1", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
               "trainer.limit_test_batches=1", "report=false"] if smoke else ["trainer=gpu"])
    cmd = [sys.executable, "-m", "fmnist_lightning", "experiment=speedrun", *device, "trainer.precision=auto",
           *base_overrides(root, log_dir), *extra]
    status, seconds, tail = run(cmd, work / "speedrun.log", timeout)
    row: dict[str, Any] = {"command": " ".join(["python -m fmnist_lightning", *cmd[3:]]), "exit": status,
                           "wall_s": round(seconds, 1)}
    metrics = sorted(log_dir.glob("runs/*/metrics.json"))
    if status == 0 and metrics:
        m = json.loads(metrics[-1].read_text())
        row.update(test_acc=m.get("test/acc"), run_wall_time_s=m.get("wall_time_s"), epochs=m.get("epochs"),
                   test_tta=m.get("test_tta"), run_dir=str(metrics[-1].parent))
        found = re.search(r"trainer\.precision=auto: (\S+)", (metrics[-1].parent / "train.log").read_text(errors="replace"))
        row["precision"] = found.group(1) if found else "not logged"
    row["ok"] = status == 0 and row.get("test_acc") is not None
    row["reached_target"] = bool(row.get("test_acc") is not None and row["test_acc"] >= SPEEDRUN_TARGET)
    if not row["ok"]:
        row["error"] = tail[-1500:]
    return row


def throughput_grid(root: Path, work: Path, smoke: bool, timeout_at: float, extra: list[str],
                    models: list[str], precisions: list[str]) -> list[dict[str, Any]]:
    """One Hydra multirun per model.compile value; every cell's images/s (or why there is none)."""
    warmup, steps, batch = (1, 2, 64) if smoke else (10, 100, 256)
    accelerator = ["trainer.accelerator=cpu", "trainer.devices=1"] if smoke else ["trainer=gpu"]
    rows = []
    for compiled in ("false", "true"):
        log_dir = work / f"throughput_compile_{compiled}"
        # The smoke run compiles one cell only (a CPU compile takes ~10 s): enough to keep the path working.
        layouts = "false" if smoke and compiled == "true" else "false,true"
        precs = precisions[0] if smoke and compiled == "true" else ",".join(precisions)
        cmd = [sys.executable, "-m", "fmnist_lightning", "-m", f"model={','.join(models)}", *accelerator,
               f"trainer.precision={precs}", f"model.channels_last={layouts}", f"model.compile={compiled}",
               "aug=shift_flip", "optim=sgd", "optim.momentum=0.9", "sched=none", f"data.batch_size={batch}",
               "data.val_size=0", "trainer.max_epochs=1", f"trainer.limit_train_batches={warmup + steps}",
               "trainer.limit_val_batches=0", "test=false", "report=false",
               "+callbacks.bench_timer._target_=gpu_check.SyncedStepTimer", f"+callbacks.bench_timer.warmup={warmup}",
               f"+callbacks.bench_timer.steps={steps}", "+callbacks.bench_timer.out=${paths.output_dir}/timing.json",
               *base_overrides(root, log_dir), *extra]
        left = timeout_at - time.perf_counter()
        if left < 20:
            rows.append({"cells": f"model.compile={compiled}", "error": "not run: the time budget was spent"})
            continue
        status, seconds, tail = run(cmd, work / f"throughput_compile_{compiled}.log", left)
        jobs = sorted(log_dir.glob("multirun/*/*/.hydra/overrides.yaml"))
        for overrides_file in jobs:
            job = overrides_file.parent.parent
            chosen = dict(line.strip().lstrip("- ").split("=", 1) for line in overrides_file.read_text().splitlines()
                          if line.strip().startswith("- ") and "=" in line)
            row = {"model": chosen.get("model"), "precision": chosen.get("trainer.precision"),
                   # Hydra records a swept bool as Python writes it (False); the table uses YAML's spelling.
                   "channels_last": chosen.get("model.channels_last", "").lower(),
                   "compile": chosen.get("model.compile", "").lower(),
                   "batch": batch, "steps": steps, "warmup": warmup}
            if (job / "timing.json").is_file():
                row.update(json.loads((job / "timing.json").read_text()))
            elif (job / "status.json").is_file():
                row["error"] = json.loads((job / "status.json").read_text()).get("error", "failed")
            else:
                row["error"] = "timed out" if status is None else "no timing written"
            rows.append(row)
        if not jobs:
            rows.append({"cells": f"model.compile={compiled}", "error": ("timed out" if status is None else
                                                                         f"exit {status}: {tail.strip()[-300:]}")})
        print(f"  throughput, model.compile={compiled}: {len(jobs)} cells in {seconds:.0f} s", flush=True)
    return rows


# --- the machine and the table -------------------------------------------------------------------------------------


def machine(smoke: bool) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda": torch.version.cuda or "none", "cudnn": torch.backends.cudnn.version() if
                             torch.backends.cudnn.is_available() else None}
    sys.path.insert(0, str(HERE))
    from results_files import cpu_name

    facts["cpu"] = cpu_name()
    if torch.cuda.is_available() and not smoke:
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1))
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
            facts["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
        else:
            facts["driver"] = "unknown (no nvidia-smi)"
    else:
        facts.update(gpu="none: CPU smoke run" if smoke else "none", driver="-")
    import lightning

    facts["lightning"] = lightning.__version__
    return facts


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def cell(text: Any, limit: int = 200) -> str:
    """Text made safe for one Markdown table cell: one line, no column bars, at most ``limit`` characters."""
    return " ".join(str(text).split())[:limit].replace("|", "\\|")


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    title = "GPU check (CPU smoke run: the figures measure nothing)" if report["smoke"] else f"GPU check: {m['gpu']}"
    lines = [
        f"# {title}",
        "",
        f"GPU: {m['gpu']}" + (f" (compute capability {m['capability']}, {m['gpu_memory_gib']} GiB)" if "capability" in m else "")
        + f"; driver {m['driver']}; torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}; Lightning {m['lightning']}; "
        f"Python {m['python']}; CPU {m['cpu']}. {report['date']}, {report['seconds']:.0f} s in all. "
        f"Command: `{report['command']}`.",
    ]
    if report["installed_from_wheels"]:
        lines.append(f"Installed from --wheels: {', '.join(report['installed_from_wheels'])}.")
    if report["unmet_requirements"]:
        lines.append(f"pyproject.toml requirements not met here: {'; '.join(report['unmet_requirements'])}.")
    lines += ["", "| stage | what | result | figures |", "|---|---|---|---|"]
    a = report.get("cuda_tests")
    if a:
        lines.append(f"| a | `pytest -m cuda` ({', '.join(a['files']) or 'no file'}) | {'ok' if a['ok'] else 'FAILED'} | "
                     f"{cell(a['summary'])}; {a['seconds']} s |")
    for r in report.get("augmentation", []):
        lines.append(f"| b | {r['op']}, device vs CPU | {'ok' if r['ok'] else 'FAILED'} | same parameters: max abs diff "
                     f"{r['max_abs_diff']:.1e}, pixels off by > 1/255: {r['share_px_over_1_255']:.1e}"
                     f"{'' if r['host_draws_only'] else ' (a draw escaped to the device generator)'}; native draws: mean "
                     f"change {r['mean_change_cpu']:.4f} CPU, {r['mean_change_device']:.4f} device (z {r['z']:+.1f}) |")
    c = report.get("speedrun")
    if c:
        what = ("experiment=speedrun trainer.accelerator=cpu trainer.precision=auto, 1 epoch of 2 batches" if report["smoke"]
                else "experiment=speedrun trainer=gpu trainer.precision=auto")
        if c["ok"]:
            lines.append(f"| c | {what} | "
                         f"{'ok' if c['ok'] else 'FAILED'}, test accuracy {c['test_acc']:.2%} "
                         f"({'reaches' if c['reached_target'] else 'below'} 93.0%) | wall {c['wall_s']} s (the run's own "
                         f"wall_time_s {c['run_wall_time_s']}), {c['epochs']} epochs, precision auto -> {c['precision']}, "
                         f"test_tta {c['test_tta']} |")
        else:
            status = "timed out" if c["exit"] is None else f"exit {c['exit']}"
            lines.append(f"| c | {what} | FAILED ({status}) | see {report['work']}/speedrun.log |")
    for r in report.get("throughput", []):
        if "model" not in r:
            lines.append(f"| d | {r['cells']} | not measured | {cell(r['error'])} |")
            continue
        what = f"{r['model']}, {r['precision']}, channels_last={r['channels_last']}, compile={r['compile']}"
        if "img_per_s" in r:
            peak = f"; peak GPU memory {fmt(r['peak_gpu_mb'])} MiB" if r.get("peak_gpu_mb") is not None else ""
            lines.append(f"| d | {what} | {fmt(r['img_per_s'])} img/s | batch {r['batch']}, {r['steps']} timed steps after "
                         f"{r['warmup']}{peak} |")
        else:
            lines.append(f"| d | {what} | FAILED | {cell(r['error'])} |")
    return "\n".join(lines) + "\n"


def default_root() -> Path:
    for root in (ROOT / "data", ROOT.parent / "shared" / "data"):
        if (root / "FashionMNIST" / "raw").is_dir():
            return root
    return ROOT / "data"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, help="folder of wheels for packages this Python lacks")
    parser.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "fmnist-gpu-check-site",
                        help="where --wheels installs them (default: %(default)s)")
    parser.add_argument("--root", type=Path, default=None, help="folder containing FashionMNIST/raw/ "
                        "(default: data/ in the checkout, else ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="where the table goes (default: bench/results/gpu; "
                        "with --cpu-smoke a new temporary folder)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs and logs (default: a new "
                        "temporary folder, kept)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every stage on the CPU, smallest sizes: checks the "
                        "script, measures nothing")
    parser.add_argument("--stages", default="abcd", help="which stages to run (default abcd)")
    parser.add_argument("--models", nargs="+", default=None, help="stage d's models (default compact tinyvgg; smoke: linear)")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], help="stage d's precisions")
    parser.add_argument("--images", type=int, default=None, help="stage b's images per op (default 4096; smoke 256)")
    parser.add_argument("--budget-s", type=float, default=570.0, help="stop starting work after this many seconds")
    parser.add_argument("--cli-override", action="append", default=[], help="one more override for every CLI run")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    deadline = start + args.budget_s
    installed = install_missing(args.wheels, args.site) if args.wheels else []
    if args.wheels:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(HERE), str(args.site),
                                                    os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for path in (str(HERE), str(ROOT / "src")):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        [str(ROOT / "src"), str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))

    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print("error: no CUDA device is visible to torch; run with --cpu-smoke to check the script on a CPU",
              file=sys.stderr)
        return 2
    root = (args.root or default_root()).resolve()
    if not (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        print(f"error: no Fashion-MNIST in {root}/FashionMNIST/raw; give --root (docs/gpu.md says how to carry it)",
              file=sys.stderr)
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_smoke_")) if smoke else HERE / "results" / "gpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_runs_"))
    work.mkdir(parents=True, exist_ok=True)
    device = "cpu" if smoke else "cuda"
    models = args.models or (["linear"] if smoke else ["compact", "tinyvgg"])
    report: dict[str, Any] = {
        "smoke": smoke, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(smoke), "work": str(work),
        "command": "bench/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
        "installed_from_wheels": installed, "unmet_requirements": unmet_requirements(),
    }
    print(f"GPU check on {report['machine']['gpu']}; work folder {work}", flush=True)
    if "a" in args.stages:
        print("a. pytest -m cuda", flush=True)
        report["cuda_tests"] = stage_cuda_tests(work, deadline - time.perf_counter())
        print(f"  {report['cuda_tests']['summary']}", flush=True)
    if "b" in args.stages:
        print(f"b. batched augmentation, {device} vs cpu", flush=True)
        report["augmentation"] = stage_augmentation(root, device, args.images or (256 if smoke else 4096))
    if "c" in args.stages:
        print("c. experiment=speedrun", flush=True)
        report["speedrun"] = stage_speedrun(root, work, smoke, deadline - time.perf_counter(), args.cli_override)
        print(f"  test accuracy {report['speedrun'].get('test_acc')}, wall {report['speedrun']['wall_s']} s", flush=True)
    if "d" in args.stages:
        print("d. throughput", flush=True)
        report["throughput"] = throughput_grid(root, work, smoke, deadline, args.cli_override, models, args.precisions)
    report["seconds"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    (out / "gpu_check.md").write_text(table)
    print(table)
    print(f"wrote {out / 'gpu_check.md'} and gpu_check.json; logs and runs in {work}")
    ok = (report.get("cuda_tests", {}).get("ok", True) and all(r["ok"] for r in report.get("augmentation", []))
          and report.get("speedrun", {}).get("ok", True)
          and all("img_per_s" in r for r in report.get("throughput", [])))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
