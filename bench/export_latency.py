"""Inference latency of served models: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, on this CPU.

For each backbone, the model as ``fmnist_lightning.export`` writes it (normalisation folded
in, softmax out) is timed at batch 1 and batch 256 in three arms:

1. eager:     the same ``ServedModel`` in PyTorch, ``torch.inference_mode()``
2. ort_fp32:  the exported ONNX file on onnxruntime's CPU provider
3. ort_int8:  that file quantized by ``quantize=static`` (QDQ int8, calibrated on 1,000 training images)

Latency does not depend on the weights' values, so the backbones are freshly initialised from
their configs (``conf/model/<name>.yaml``); static quantization is calibrated on real images.
Every cell is repeated (``--repeats``) with the arms interleaved in each repeat; a repeat times
``--calls`` calls after ``--warmup`` untimed ones. Reported: the median over repeats of the
per-call time, and the min-max spread.

Usage: python bench/export_latency.py [--models tinyvgg compact resnet] [--repeats 5] [--smoke]
Writes bench/results/export_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from results_files import cpu_name, write_results

RESULTS = Path(__file__).resolve().parent / "results"
ARMS = ("eager", "ort_fp32", "ort_int8")
BATCHES = (1, 256)


def build_served(model: str) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from fmnist_lightning.config.files import CONF_DIR
    from fmnist_lightning.config.hydra_compat import ALLOWED, INIT_ARGS
    from fmnist_lightning.data.fashion_mnist import NORMALIZATION
    from fmnist_lightning.deploy.served_model import ServedModel

    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(config_name="config", overrides=[f"model={model}"])
    return ServedModel(instantiate(cfg.model, **ALLOWED), *NORMALIZATION["dataset"]).eval()


def runners(model: str, workdir: Path, calibration: np.ndarray) -> dict[str, Callable[[np.ndarray], Any]]:
    import onnxruntime as ort
    import torch

    from fmnist_lightning.deploy.quantization import quantize
    from fmnist_lightning.deploy.served_model import export_onnx

    served = build_served(model)
    fp32 = workdir / f"{model}.onnx"
    export_onnx(served, fp32, 18, {"model": model})
    int8 = quantize(fp32, "static", calibration)
    sessions = {
        arm: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for arm, path in (("ort_fp32", fp32), ("ort_int8", int8))
    }

    def eager(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return served(torch.from_numpy(x))

    def onnx_arm(arm: str) -> Callable[[np.ndarray], Any]:
        session = sessions[arm]
        return lambda x: session.run(None, {"images": x})

    return {"eager": eager, "ort_fp32": onnx_arm("ort_fp32"), "ort_int8": onnx_arm("ort_int8")}


def time_calls(run: Callable[[np.ndarray], Any], x: np.ndarray, calls: int, warmup: int) -> float:
    for _ in range(warmup):
        run(x)
    start = time.perf_counter()
    for _ in range(calls):
        run(x)
    return (time.perf_counter() - start) / calls * 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tinyvgg", "compact", "resnet"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="1 repeat, few calls: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--root", default=None, help="folder containing FashionMNIST/raw/ (default: as training finds it)"
    )
    return parser.parse_args()


def load_inputs(root: str | None) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Real images for the static calibration, and a fixed-seed input per batch size so every arm sees the same."""
    from fmnist_lightning.data.idx_files import load_split, resolve_data_root

    train_images = load_split(resolve_data_root(root), "train")[0]
    calibration = (train_images[:1000].float() / 255).numpy()
    inputs_pool = min(len(train_images), max(BATCHES))
    rng = np.random.default_rng(0)
    inputs = {
        b: (train_images[rng.choice(len(train_images), b, replace=b > inputs_pool)].float() / 255).numpy()
        for b in BATCHES
    }
    return calibration, inputs


def measure(
    models: list[str],
    calibration: np.ndarray,
    inputs: dict[int, np.ndarray],
    repeats: int,
    calls: dict[int, int],
    warmup: int,
) -> dict[tuple[str, str, int], list[float]]:
    """Per-call milliseconds of every (model, arm, batch) cell, one sample per repeat."""
    samples: dict[tuple[str, str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {model: runners(model, Path(tmp), calibration) for model in models}
        for r in range(repeats):
            for model in models:
                for batch in BATCHES:
                    order = ARMS[r % len(ARMS) :] + ARMS[: r % len(ARMS)]  # rotate which arm goes first
                    for arm in order:
                        ms = time_calls(arms[model][arm], inputs[batch], calls[batch], warmup)
                        samples.setdefault((model, arm, batch), []).append(ms)
    return samples


def summary_rows(samples: dict[tuple[str, str, int], list[float]]) -> list[dict[str, Any]]:
    """The median and spread of each cell: the median resists a repeat disturbed by other work on the CPU."""
    rows = []
    for (model, arm, batch), values in samples.items():
        median = statistics.median(values)
        rows.append(
            {
                "model": model,
                "arm": arm,
                "batch": batch,
                "median_ms": median,
                "min_ms": min(values),
                "max_ms": max(values),
                "images_per_s": batch / median * 1000,
                "repeats": len(values),
            }
        )
    return rows


def main() -> None:
    args = parse_args()
    import torch

    repeats = 1 if args.smoke else args.repeats
    calls = {1: 3, 256: 1} if args.smoke else {1: 200, 256: 10}
    warmup = 1 if args.smoke else args.warmup
    calibration, inputs = load_inputs(args.root)
    samples = measure(args.models, calibration, inputs, repeats, calls, warmup)
    report = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "repeats": repeats,
        "calls": calls,
        "command": "python bench/export_latency.py" + (" --smoke" if args.smoke else ""),
        "rows": summary_rows(samples),
    }
    write_results(args.out, "export_latency", report, markdown(report))


def markdown(report: dict[str, Any]) -> str:
    cell = {(r["model"], r["arm"], r["batch"]): r for r in report["rows"]}
    models = list(dict.fromkeys(r["model"] for r in report["rows"]))
    lines = [
        "# Inference latency of the exported model (ms per call, median of repeats; min-max)",
        "",
        f"CPU: {report['cpu']}; torch {report['torch']} ({report['torch_threads']} threads), "
        f"onnxruntime {report['onnxruntime']}; {report['repeats']} interleaved repeats; "
        f"command: `{report['command']}`.",
        "",
        "| model | batch | PyTorch eager | ORT fp32 | ORT int8 (static) | ORT fp32 speed-up | ORT int8 speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in models:
        for batch in BATCHES:
            e, f, q = (cell[(model, arm, batch)] for arm in ARMS)

            def fmt(c: dict) -> str:
                return f"{c['median_ms']:.3f} ({c['min_ms']:.3f}-{c['max_ms']:.3f})"

            lines.append(
                f"| {model} | {batch} | {fmt(e)} | {fmt(f)} | {fmt(q)} | "
                f"{e['median_ms'] / f['median_ms']:.2f}x | {e['median_ms'] / q['median_ms']:.2f}x |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
