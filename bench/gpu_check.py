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
with ``pip install --no-index --no-deps --target <--site>``, and that folder is put on PYTHONPATH, ahead of
site-packages, for this
script and every process it starts. Every other package is left as it is; a requirement of
pyproject.toml that is still not met is named in the table.

Usage: bench/gpu_check.sh [--wheels DIR] [--site DIR] [--root DATA] [--out DIR] [--work DIR] [--cpu-smoke]
                          [--stages abcd] [--budget-s 570]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# tests/test_cuda.py loads this file by its path, with bench/ not on sys.path: the modules beside it must still import.
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

from gpu_augmentation import (  # noqa: E402 - after bench/ is on sys.path
    NATIVE_MAX_Z,
    SAME_PARAMS_MAX_SHARE,
    augmentation_ops,
    compare_op,
    load_images,
    stage_augmentation,
)
from gpu_cli_stages import stage_cuda_tests, stage_speedrun, throughput_grid  # noqa: E402 - after bench/ is on sys.path
from gpu_table import markdown  # noqa: E402 - after bench/ is on sys.path
from gpu_wheels import install_missing, unmet_requirements  # noqa: E402 - after bench/ is on sys.path

# tests/test_cuda.py runs stage b's comparison op by op, reading it (and its thresholds) as gpu_check.<name>.
__all__ = ["NATIVE_MAX_Z", "SAME_PARAMS_MAX_SHARE", "augmentation_ops", "compare_op", "load_images", "main"]


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
            dataset = getattr(trainer.datamodule, "train_set", None) or getattr(
                trainer.train_dataloader, "dataset", None
            )
            images = getattr(dataset, "images", None)
            self.out.write_text(
                json.dumps(
                    {
                        "batch": str(batch[0].device),
                        "model": str(pl_module.device),
                        "precision": str(trainer.precision),
                        "train_images": str(images.device) if images is not None else "unknown",
                    }
                )
            )

    return DeviceProbe


def __getattr__(name: str) -> Any:
    if name == "SyncedStepTimer":
        return _synced_step_timer()
    if name == "DeviceProbe":
        return _device_probe()
    raise AttributeError(name)


# --- the machine and the command line ------------------------------------------------------------------------------


def machine(smoke: bool) -> dict[str, Any]:
    import torch

    facts: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    from results_files import cpu_name

    facts["cpu"] = cpu_name()
    if torch.cuda.is_available() and not smoke:
        props = torch.cuda.get_device_properties(0)
        facts.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
        )
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run(
                [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
            )
            facts["driver"] = (
                out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
            )
        else:
            facts["driver"] = "unknown (no nvidia-smi)"
    else:
        facts.update(gpu="none: CPU smoke run" if smoke else "none", driver="-")
    import lightning

    facts["lightning"] = lightning.__version__
    return facts


def default_root() -> Path:
    for root in (ROOT / "data", ROOT.parent / "shared" / "data"):
        if (root / "FashionMNIST" / "raw").is_dir():
            return root
    return ROOT / "data"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, help="folder of wheels for packages this Python lacks")
    parser.add_argument(
        "--site",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fmnist-gpu-check-site",
        help="where --wheels installs them (default: %(default)s)",
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder containing FashionMNIST/raw/ (default: data/ in the checkout, else ../shared/data)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where the table goes (default: bench/results/gpu; with --cpu-smoke a new temporary folder)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the runs and logs (default: a new temporary folder, kept)"
    )
    parser.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="every stage on the CPU, smallest sizes: checks the script, measures nothing",
    )
    parser.add_argument("--stages", default="abcd", help="which stages to run (default abcd)")
    parser.add_argument(
        "--models", nargs="+", default=None, help="stage d's models (default compact tinyvgg; smoke: linear)"
    )
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], help="stage d's precisions")
    parser.add_argument("--images", type=int, default=None, help="stage b's images per op (default 4096; smoke 256)")
    parser.add_argument("--budget-s", type=float, default=570.0, help="stop starting work after this many seconds")
    parser.add_argument("--cli-override", action="append", default=[], help="one more override for every CLI run")
    return parser.parse_args(argv)


def set_up_imports(args: argparse.Namespace) -> list[str]:
    """Install what --wheels brings (before torch or Lightning is imported, so that they see it), and put src/,
    bench/ and --site on sys.path and on PYTHONPATH for every process started later; the wheels installed."""
    installed = install_missing(args.wheels, args.site) if args.wheels else []
    if args.wheels:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(HERE), str(args.site), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
    for path in (str(HERE), str(ROOT / "src")):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        dict.fromkeys([str(ROOT / "src"), str(HERE), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    )
    # The CLI runs build this file's callbacks (gpu_check.DeviceProbe, SyncedStepTimer): trusted by the caller.
    os.environ["FMNIST_TRUSTED_TARGETS"] = "gpu_check.*,step_timer.*"
    return installed


def run_stages(
    args: argparse.Namespace, report: dict[str, Any], root: Path, work: Path, deadline: float, models: list[str]
) -> None:
    """The stages asked for by --stages, in order, each one's rows into ``report``."""
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
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
        print(
            f"  test accuracy {report['speedrun'].get('test_acc')}, wall {report['speedrun']['wall_s']} s", flush=True
        )
    if "d" in args.stages:
        print("d. throughput", flush=True)
        report["throughput"] = throughput_grid(root, work, smoke, deadline, args.cli_override, models, args.precisions)


def passed(report: dict[str, Any]) -> bool:
    """Whether every stage that ran passed (a stage that did not run does not fail the check)."""
    return (
        report.get("cuda_tests", {}).get("ok", True)
        and all(r["ok"] for r in report.get("augmentation", []))
        and report.get("speedrun", {}).get("ok", True)
        and all("img_per_s" in r for r in report.get("throughput", []))
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    deadline = start + args.budget_s
    installed = set_up_imports(args)

    import torch

    smoke = args.cpu_smoke
    if not smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA device is visible to torch; run with --cpu-smoke to check the script on a CPU",
            file=sys.stderr,
        )
        return 2
    root = (args.root or default_root()).resolve()
    if not (root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        print(
            f"error: no Fashion-MNIST in {root}/FashionMNIST/raw; give --root (docs/gpu.md says how to carry it)",
            file=sys.stderr,
        )
        return 2
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_smoke_")) if smoke else HERE / "results" / "gpu")
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_runs_"))
    work.mkdir(parents=True, exist_ok=True)
    models = args.models or (["linear"] if smoke else ["compact", "tinyvgg"])
    report: dict[str, Any] = {
        "smoke": smoke,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(smoke),
        "work": str(work),
        "command": "bench/gpu_check.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
        "installed_from_wheels": installed,
        "unmet_requirements": unmet_requirements(),
    }
    print(f"GPU check on {report['machine']['gpu']}; work folder {work}", flush=True)
    run_stages(args, report, root, work, deadline, models)
    report["seconds"] = round(time.perf_counter() - start, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    (out / "gpu_check.md").write_text(table)
    print(table)
    print(f"wrote {out / 'gpu_check.md'} and gpu_check.json; logs and runs in {work}")
    return 0 if passed(report) else 1


if __name__ == "__main__":
    sys.exit(main())
