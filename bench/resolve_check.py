"""Does ``pip install '.[dev,sweeps]'`` resolve on Python 3.11, 3.12 and 3.13 (Linux x86-64)? Without installing.

For each Python version, pip resolves this checkout with its extras from the package index's own
metadata, as a new user's ``pip install`` would, with ``--dry-run --report``:

* wheels only (``--only-binary=:all:``) for that CPython on Linux x86-64 with glibc ``--glibc``
  (default 2.35, Ubuntu 22.04's: every ``manylinux_2_N`` tag up to it is accepted);
* ``--use-feature=fast-deps``: pip reads each wheel's METADATA by HTTP range requests, so torch's
  ~540 MB CUDA wheel is not downloaded (the index here serves no separate PEP 658 metadata files);
* this machine's own pip settings left out (``PIP_CONFIG_FILE=/dev/null``, no ``PIP_FIND_LINKS``,
  ``PIP_CONSTRAINT``, extra indexes): its cap ``torch<=2.14.1`` and the wheels on its disk belong to
  the build machine, not to the package. ``PIP_INDEX_URL`` (a mirror of the index) is kept.

A dependency the index serves no wheel of for that Python is named. If it has a pure-Python sdist
(as antlr4-python3-runtime 4.9.3, which hydra-core needs, has), it is built here into a
``py3-none-any`` wheel and the resolution retried, and the note says so; otherwise that Python is
reported as blocked by it.

Usage: python bench/resolve_check.py [--pythons 3.11 3.12 3.13] [--glibc 2.35] [--extras dev,sweeps]
                                     [--json FILE] [--markdown FILE]
Exit status: 0 every Python resolved; 1 one or more did not (the table says what blocks it);
77 skipped: the package index cannot be reached (no network), with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SKIP = 77
BUILDING = threading.Lock()
# Packages whose chosen versions the table shows (the rest are in the JSON report).
SHOWN = (
    "torch",
    "torchvision",
    "lightning",
    "hydra-core",
    "omegaconf",
    "torchmetrics",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "numpy",
    "optuna",
)
# This machine's pip settings that are not the index: its config files, local wheel folders, its constraints.
LOCAL_PIP_VARIABLES = (
    "PIP_FIND_LINKS",
    "PIP_CONSTRAINT",
    "PIP_EXTRA_INDEX_URL",
    "PIP_NO_INDEX",
    "PIP_REQUIRE_VIRTUALENV",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_USER",
)
NETWORK_ERRORS = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No route to host",
    "Connection refused",
    "Could not fetch URL",
    "Read timed out",
    "ConnectTimeoutError",
    "NewConnectionError",
    "ProxyError",
    "SSLError",
    "Max retries exceeded",
)


def canonical(name: str) -> str:
    """A distribution's name as the index compares it (PEP 503): hydra_core, Hydra.Core -> hydra-core."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_PIP_VARIABLES}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def platforms(glibc: str) -> list[str]:
    """pip matches ``--platform`` tags exactly: every manylinux tag a glibc-``glibc`` x86-64 system runs."""
    major, minor = (int(p) for p in glibc.split("."))
    if major != 2 or minor < 17:
        raise SystemExit(f"error: --glibc {glibc}: give 2.N with N >= 17")
    tags = [f"manylinux_2_{n}_x86_64" for n in range(minor, 4, -1)]
    return [*tags, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def pip(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=pip_env(), timeout=timeout, cwd=ROOT
    )


def index_unreachable() -> str | None:
    """Why the package index cannot be reached, or None when it answers."""
    try:
        result = pip("index", "versions", "pip", timeout=120)
    except subprocess.TimeoutExpired:
        return "the package index did not answer within 120 s"
    if result.returncode == 0:
        return None
    text = result.stdout + result.stderr
    if any(marker in text for marker in NETWORK_ERRORS):
        line = next((ln for ln in text.splitlines() if any(m in ln for m in NETWORK_ERRORS)), text.strip())
        return f"the package index cannot be reached: {line.strip()[:300]}"
    return None  # it answered, with some other complaint; the resolution below will show it


def missing_wheels(output: str) -> dict[str, str]:
    """From pip's ResolutionImpossible text: {package: a specifier asked of it} for those with no usable wheel."""
    names: list[str] = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "no matching distributions available for your environment" in line:
            names += [ln.strip() for ln in lines[i + 1 :] if ln.startswith("    ") and ln.strip()]
    found = set(re.findall(r"No matching distribution found for ([A-Za-z0-9_.\-\[\]]+)([^\s]*)", output))
    specs = dict(found)
    for name in names:
        match = re.search(rf"depends on {re.escape(name)}([^\s]*)", output, re.IGNORECASE)
        specs.setdefault(name, match.group(1) if match else "")
    return specs


def build_pure_wheel(name: str, spec: str, wheel_dir: Path) -> str | None:
    """Build ``name spec`` from its sdist; the wheel's file name if it is pure Python, else None (removed)."""
    before = set(wheel_dir.glob("*.whl"))
    result = pip("wheel", "--no-deps", "--no-binary", name, "--wheel-dir", str(wheel_dir), f"{name}{spec}")
    built = sorted(set(wheel_dir.glob("*.whl")) - before)
    if result.returncode != 0 or not built:
        return None
    if not built[0].name.endswith("-none-any.whl"):
        built[0].unlink()
        return None
    return built[0].name


def resolve(python: str, glibc: str, extras: str, wheel_dir: Path, report: Path) -> subprocess.CompletedProcess:
    plat = [arg for tag in platforms(glibc) for arg in ("--platform", tag)]
    target = f".[{extras}]" if extras else "."
    return pip(
        "install",
        "--dry-run",
        "--ignore-installed",
        "--use-feature=fast-deps",
        "--only-binary=:all:",
        "--python-version",
        python,
        "--implementation",
        "cp",
        *plat,
        "--find-links",
        str(wheel_dir),
        "--no-cache-dir",
        "--report",
        str(report),
        target,
    )


def check(python: str, glibc: str, extras: str, wheel_dir: Path, built: dict[str, str]) -> dict[str, Any]:
    """Resolve for one Python, building pure-Python wheels the index lacks (at most a few rounds)."""
    start = time.perf_counter()
    row: dict[str, Any] = {
        "python": python,
        "resolved": False,
        "versions": {},
        "no_wheel_on_index": [],
        "blocked_by": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        for _ in range(4):
            with BUILDING:
                known = set(built)  # the wheels this attempt can use
            result = resolve(python, glibc, extras, wheel_dir, report)
            if result.returncode == 0:
                installs = json.loads(report.read_text())["install"]
                row["versions"] = {canonical(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}
                row["resolved"] = True
                break
            output = result.stdout + result.stderr
            missing = missing_wheels(output)
            # The Pythons resolve at once: one builds a missing wheel, the others wait and then use it.
            with BUILDING:
                fresh = {n: s for n, s in missing.items() if canonical(n) not in built}
                built_since = any(canonical(n) in built and canonical(n) not in known for n in missing)
                if not fresh and not built_since:
                    row["blocked_by"] = sorted(missing) or ["see error"]
                    row["error"] = "\n".join(output.strip().splitlines()[-25:])
                    break
                for name, spec in fresh.items():
                    wheel = build_pure_wheel(name, spec, wheel_dir)
                    if wheel is None:
                        row["blocked_by"].append(name)
                    else:
                        built[canonical(name)] = wheel
            if row["blocked_by"]:
                row["error"] = "\n".join(output.strip().splitlines()[-25:])
                break
    # Which of the resolved set the index has no wheel of (so this check built one).
    row["no_wheel_on_index"] = sorted(f"{n} {row['versions'][n]}" for n in built if n in row["versions"])
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Resolution of `pip install '.[{result['extras']}]'` for CPython on Linux x86-64 (glibc {result['glibc']}), "
        f"wheels only, from the index's metadata ({result['date']}; {result['seconds']:.0f} s in all). "
        f"Command: `{result['command']}`.",
        "",
        "| Python | resolves | " + " | ".join(SHOWN) + " | no wheel on the index |",
        "|---|---|" + "---|" * len(SHOWN) + "---|",
    ]
    for row in result["rows"]:
        status = "yes" if row["resolved"] else f"no: blocked by {', '.join(row['blocked_by'])}"
        cells = [row["versions"].get(name, "-") for name in SHOWN]
        built = "; ".join(row["no_wheel_on_index"]) or "none"
        lines.append(f"| {row['python']} | {status} | " + " | ".join(cells) + f" | {built} |")
    if result["built"]:
        lines += [
            "",
            "Built here from a pure-Python sdist (the index has no wheel): "
            + ", ".join(result["built"].values())
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pythons", nargs="+", default=["3.11", "3.12", "3.13"])
    parser.add_argument("--glibc", default="2.35", help="the oldest glibc the users' Linux has (default 2.35)")
    parser.add_argument("--extras", default="dev,sweeps")
    parser.add_argument("--json", type=Path, help="write the result as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    reason = index_unreachable()
    if reason:
        print(f"SKIP: {reason}; the resolution check needs the package index")
        return SKIP
    built: dict[str, str] = {}
    rows = []
    # Each resolution mostly waits on the index: the Pythons resolve side by side.
    with tempfile.TemporaryDirectory() as wheels, ThreadPoolExecutor(len(args.pythons)) as pool:
        futures = [pool.submit(check, python, args.glibc, args.extras, Path(wheels), built) for python in args.pythons]
        for python, future in zip(args.pythons, futures, strict=True):
            row = future.result()
            rows.append(row)
            chosen = ", ".join(f"{n} {row['versions'][n]}" for n in SHOWN[:3] if n in row["versions"])
            state = (
                f"resolves ({chosen})"
                if row["resolved"]
                else f"does NOT resolve: blocked by {', '.join(row['blocked_by'])}"
            )
            print(f"Python {python}: {state} [{row['seconds']} s]", flush=True)
            if not row["resolved"]:
                print(row.get("error", ""), file=sys.stderr)
    result = {
        "extras": args.extras,
        "glibc": args.glibc,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - start, 1),
        "built": built,
        "command": "python bench/resolve_check.py"
        + (f" {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()),
        "rows": rows,
    }
    table = markdown(result)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(table)
    return 0 if all(r["resolved"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
