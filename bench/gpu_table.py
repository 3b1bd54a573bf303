"""The GPU check's Markdown table, ``gpu_check.md``: a header naming the machine, then rows for stage a, each
op of stage b, stage c and each cell of stage d, from the report bench/gpu_check.py also writes as JSON."""

from __future__ import annotations

from typing import Any


def fmt(value: Any, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)


def cell(text: Any, limit: int = 200) -> str:
    """Text made safe for one Markdown table cell: one line, no column bars, at most ``limit`` characters."""
    return " ".join(str(text).split())[:limit].replace("|", "\\|")


def header_lines(report: dict[str, Any]) -> list[str]:
    """Title and provenance: a figure means something only beside the machine and software that measured it."""
    m = report["machine"]
    title = "GPU check (CPU smoke run: the figures measure nothing)" if report["smoke"] else f"GPU check: {m['gpu']}"
    lines = [
        f"# {title}",
        "",
        f"GPU: {m['gpu']}"
        + (f" (compute capability {m['capability']}, {m['gpu_memory_gib']} GiB)" if "capability" in m else "")
        + f"; driver {m['driver']}; torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}; "
        f"Lightning {m['lightning']}; "
        f"Python {m['python']}; CPU {m['cpu']}. {report['date']}, {report['seconds']:.0f} s in all. "
        f"Command: `{report['command']}`.",
    ]
    if report["installed_from_wheels"]:
        lines.append(f"Installed from --wheels: {', '.join(report['installed_from_wheels'])}.")
    if report["unmet_requirements"]:
        lines.append(f"pyproject.toml requirements not met here: {'; '.join(report['unmet_requirements'])}.")
    return lines


def cuda_tests_row(a: dict[str, Any]) -> str:
    """Stage a's row."""
    return (
        f"| a | `pytest -m cuda` ({', '.join(a['files']) or 'no file'}) | {'ok' if a['ok'] else 'FAILED'} | "
        f"{cell(a['summary'])}; {a['seconds']} s |"
    )


def augmentation_row(r: dict[str, Any]) -> str:
    """Stage b's row for one op."""
    return (
        f"| b | {r['op']}, device vs CPU | {'ok' if r['ok'] else 'FAILED'} | same parameters: max abs diff "
        f"{r['max_abs_diff']:.1e}, pixels off by > 1/255: {r['share_px_over_1_255']:.1e}"
        f"{'' if r['host_draws_only'] else ' (a draw escaped to the device generator)'}; native draws: mean "
        f"change {r['mean_change_cpu']:.4f} CPU, {r['mean_change_device']:.4f} device (z {r['z']:+.1f}) |"
    )


def speedrun_row(c: dict[str, Any], report: dict[str, Any]) -> str:
    """Stage c's row; a failed run points at its log, since its output is too long for a cell."""
    what = (
        "experiment=speedrun trainer.accelerator=cpu trainer.precision=auto, 1 epoch of 2 batches"
        if report["smoke"]
        else "experiment=speedrun trainer=gpu trainer.precision=auto"
    )
    if c["ok"]:
        return (
            f"| c | {what} | "
            f"{'ok' if c['ok'] else 'FAILED'}, test accuracy {c['test_acc']:.2%} "
            f"({'reaches' if c['reached_target'] else 'below'} 93.0%) | wall {c['wall_s']} s (the run's own "
            f"wall_time_s {c['run_wall_time_s']}), {c['epochs']} epochs, precision auto -> {c['precision']}, "
            f"test_tta {c['test_tta']} |"
        )
    status = "timed out" if c["exit"] is None else f"exit {c['exit']}"
    return f"| c | {what} | FAILED ({status}) | see {report['work']}/speedrun.log |"


def throughput_row(r: dict[str, Any]) -> str:
    """Stage d's row for one cell, or for a whole multirun that produced no cell."""
    if "model" not in r:
        return f"| d | {r['cells']} | not measured | {cell(r['error'])} |"
    what = f"{r['model']}, {r['precision']}, channels_last={r['channels_last']}, compile={r['compile']}"
    if "img_per_s" in r:
        peak = f"; peak GPU memory {fmt(r['peak_gpu_mb'])} MiB" if r.get("peak_gpu_mb") is not None else ""
        return (
            f"| d | {what} | {fmt(r['img_per_s'])} img/s | batch {r['batch']}, {r['steps']} timed steps after "
            f"{r['warmup']}{peak} |"
        )
    return f"| d | {what} | FAILED | {cell(r['error'])} |"


def markdown(report: dict[str, Any]) -> str:
    lines = header_lines(report)
    lines += ["", "| stage | what | result | figures |", "|---|---|---|---|"]
    a = report.get("cuda_tests")
    if a:
        lines.append(cuda_tests_row(a))
    lines += [augmentation_row(r) for r in report.get("augmentation", [])]
    c = report.get("speedrun")
    if c:
        lines.append(speedrun_row(c, report))
    lines += [throughput_row(r) for r in report.get("throughput", [])]
    return "\n".join(lines) + "\n"
