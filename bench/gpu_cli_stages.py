"""The GPU check's stages a, c and d: the suite's CUDA tests, and the CLI (experiment=speedrun, and the
training-throughput grid), each run as a child process from the checkout, logged to the work folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEEDRUN_TARGET = 0.93  # experiment=speedrun's goal: >= 93.0% official test accuracy


def run(cmd: list[str], log: Path, timeout: float) -> tuple[int | None, float, str]:
    """Run ``cmd`` from the checkout, output to ``log``; (exit status or None on time-out, seconds, output tail)."""
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            status: int | None = subprocess.run(
                cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=max(timeout, 1)
            ).returncode
        except subprocess.TimeoutExpired:
            status = None
    text = log.read_text(errors="replace")
    return status, time.perf_counter() - start, text[-4000:]


def stage_cuda_tests(work: Path, timeout: float) -> dict[str, Any]:
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if re.search(r"mark\.cuda\b", p.read_text())
    )
    if not files:
        return {"files": [], "summary": "no test is marked cuda", "ok": False, "seconds": 0.0}
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", *files]
    status, seconds, tail = run(cmd, work / "pytest_cuda.log", timeout)
    summary = next(
        (ln.strip("= ") for ln in reversed(tail.splitlines()) if re.search(r"\d+ (passed|failed|skipped|error)", ln)),
        "timed out" if status is None else "no summary line",
    )
    return {
        "files": files,
        "summary": summary,
        "exit": status,
        "ok": status == 0,
        "seconds": round(seconds, 1),
        "log": str(work / "pytest_cuda.log"),
    }


def base_overrides(root: Path, log_dir: Path) -> list[str]:
    return [f"data.root={root}", "data.download=false", f"paths.log_dir={log_dir}", "trainer.enable_progress_bar=false"]


def stage_speedrun(root: Path, work: Path, smoke: bool, timeout: float, extra: list[str]) -> dict[str, Any]:
    log_dir = work / "speedrun"
    device = (
        [
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_test_batches=1",
            "report=false",
        ]
        if smoke
        else ["trainer=gpu"]
    )
    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning",
        "experiment=speedrun",
        *device,
        "trainer.precision=auto",
        *base_overrides(root, log_dir),
        *extra,
    ]
    status, seconds, tail = run(cmd, work / "speedrun.log", timeout)
    row: dict[str, Any] = {
        "command": " ".join(["python -m fmnist_lightning", *cmd[3:]]),
        "exit": status,
        "wall_s": round(seconds, 1),
    }
    metrics = sorted(log_dir.glob("runs/*/metrics.json"))
    if status == 0 and metrics:
        m = json.loads(metrics[-1].read_text())
        row.update(
            test_acc=m.get("test/acc"),
            run_wall_time_s=m.get("wall_time_s"),
            epochs=m.get("epochs"),
            test_tta=m.get("test_tta"),
            run_dir=str(metrics[-1].parent),
        )
        found = re.search(
            r"trainer\.precision=auto: (\S+)", (metrics[-1].parent / "train.log").read_text(errors="replace")
        )
        row["precision"] = found.group(1) if found else "not logged"
    row["ok"] = status == 0 and row.get("test_acc") is not None
    row["reached_target"] = bool(row.get("test_acc") is not None and row["test_acc"] >= SPEEDRUN_TARGET)
    if not row["ok"]:
        row["error"] = tail[-1500:]
    return row


def grid_shape(smoke: bool) -> tuple[int, int, int]:
    """(warmup steps, timed steps, batch size): the smoke run checks the path on a CPU, so it times next to nothing."""
    return (1, 2, 64) if smoke else (10, 100, 256)


def throughput_command(
    root: Path, log_dir: Path, smoke: bool, compiled: str, extra: list[str], models: list[str], precisions: list[str]
) -> list[str]:
    """The Hydra multirun for one model.compile value: every model, precision and memory layout as one sweep."""
    warmup, steps, batch = grid_shape(smoke)
    accelerator = ["trainer.accelerator=cpu", "trainer.devices=1"] if smoke else ["trainer=gpu"]
    # The smoke run compiles one cell only (a CPU compile takes ~10 s): enough to keep the path working.
    layouts = "false" if smoke and compiled == "true" else "false,true"
    precs = precisions[0] if smoke and compiled == "true" else ",".join(precisions)
    return [
        sys.executable,
        "-m",
        "fmnist_lightning",
        "-m",
        f"model={','.join(models)}",
        *accelerator,
        f"trainer.precision={precs}",
        f"model.channels_last={layouts}",
        f"model.compile={compiled}",
        "aug=shift_flip",
        "optim=sgd",
        "optim.momentum=0.9",
        "sched=none",
        f"data.batch_size={batch}",
        "data.val_size=0",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={warmup + steps}",
        "trainer.limit_val_batches=0",
        "test=false",
        "report=false",
        "+callbacks.bench_timer._target_=gpu_check.SyncedStepTimer",
        f"+callbacks.bench_timer.warmup={warmup}",
        f"+callbacks.bench_timer.steps={steps}",
        "+callbacks.bench_timer.out=${paths.output_dir}/timing.json",
        *base_overrides(root, log_dir),
        *extra,
    ]


def job_row(overrides_file: Path, status: int | None, smoke: bool) -> dict[str, Any]:
    """One multirun job's cell, named by the overrides Hydra recorded for it, with its timing or why it has none."""
    warmup, steps, batch = grid_shape(smoke)
    job = overrides_file.parent.parent
    chosen = dict(
        line.strip().lstrip("- ").split("=", 1)
        for line in overrides_file.read_text().splitlines()
        if line.strip().startswith("- ") and "=" in line
    )
    row = {
        "model": chosen.get("model"),
        "precision": chosen.get("trainer.precision"),
        # Hydra records a swept bool as Python writes it (False); the table uses YAML's spelling.
        "channels_last": chosen.get("model.channels_last", "").lower(),
        "compile": chosen.get("model.compile", "").lower(),
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
    }
    if (job / "timing.json").is_file():
        row.update(json.loads((job / "timing.json").read_text()))
    elif (job / "status.json").is_file():
        row["error"] = json.loads((job / "status.json").read_text()).get("error", "failed")
    else:
        row["error"] = "timed out" if status is None else "no timing written"
    return row


def throughput_grid(
    root: Path, work: Path, smoke: bool, timeout_at: float, extra: list[str], models: list[str], precisions: list[str]
) -> list[dict[str, Any]]:
    """One Hydra multirun per model.compile value; every cell's images/s (or why there is none)."""
    rows = []
    for compiled in ("false", "true"):
        log_dir = work / f"throughput_compile_{compiled}"
        cmd = throughput_command(root, log_dir, smoke, compiled, extra, models, precisions)
        left = timeout_at - time.perf_counter()
        if left < 20:
            rows.append({"cells": f"model.compile={compiled}", "error": "not run: the time budget was spent"})
            continue
        status, seconds, tail = run(cmd, work / f"throughput_compile_{compiled}.log", left)
        jobs = sorted(log_dir.glob("multirun/*/*/.hydra/overrides.yaml"))
        rows.extend(job_row(overrides_file, status, smoke) for overrides_file in jobs)
        if not jobs:
            rows.append(
                {
                    "cells": f"model.compile={compiled}",
                    "error": ("timed out" if status is None else f"exit {status}: {tail.strip()[-300:]}"),
                }
            )
        print(f"  throughput, model.compile={compiled}: {len(jobs)} cells in {seconds:.0f} s", flush=True)
    return rows
