"""Latency and throughput of ``fmnist-demo``'s API on loopback, with a real HTTP client: a bounded load test.

Starts ``python -m fmnist_lightning.demo model=<file>`` on a free 127.0.0.1 port (or uses ``--url`` of a
running one), then posts the same PNG (a Fashion-MNIST test image, 4x enlarged so the server's image
preparation does real work) as a multipart upload, the way the page does:

1. latency:    ``--requests`` sequential requests on one keep-alive connection, after ``--warmup``;
               p50 and p95 of the time from sending the request to the whole JSON answer.
2. throughput: ``--clients`` threads, each with its own keep-alive connection, posting back to back
               for ``--seconds`` (and at most ``--per-client`` each); requests per second over them all.

Every answer must be 200; any other status stops the run with its error line. Bounded in count and time.

Usage: python bench/demo_latency.py --model <file.onnx> [--requests 500] [--clients 4] [--seconds 10]
                                    [--per-client 5000]
"""

from __future__ import annotations

import argparse
import io
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

STARTUP_S = 60


def cpu_name() -> str:
    """The CPU's model name as lscpu gives it (platform.processor() is empty on Linux)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"


def test_png(data_root: Path | None) -> bytes:
    """The first official test image as a 112x112 PNG; a drawn stripe when the data is not there."""
    raw = (data_root or Path()) / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    pixels = np.fromfile(raw, np.uint8)[16 : 16 + 784].reshape(28, 28) if raw.is_file() else None
    if pixels is None:
        pixels = np.zeros((28, 28), np.uint8)
        pixels[6:22, 10:18] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((112, 112)).save(buffer, format="PNG")
    return buffer.getvalue()


def start_server(model: Path, data_root: Path | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "fmnist_lightning.demo",
        f"model={model}",
        f"port={port}",
        "examples=0",
        f"paths.log_dir={Path('outputs').resolve()}",
    ] + ([f"data_root={data_root}"] if data_root else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/api/model", timeout=2).raise_for_status()
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit(f"error: fmnist-demo did not start: {proc.communicate()[1].strip().splitlines()[-1:]}")


def post(client: httpx.Client, url: str, png: bytes) -> None:
    response = client.post(f"{url}/api/predict", files={"file": ("test.png", png, "image/png")})
    if response.status_code != 200:
        sys.exit(f"error: {response.status_code} from the server: {response.text[:300]}")


def latency(url: str, png: bytes, requests: int, warmup: int) -> list[float]:
    """Seconds per request, one at a time on one connection."""
    times = []
    with httpx.Client(timeout=30) as client:
        for i in range(warmup + requests):
            start = time.perf_counter()
            post(client, url, png)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def throughput(url: str, png: bytes, clients: int, seconds: float, cap: int) -> tuple[int, float]:
    """(requests answered, seconds) for ``clients`` threads posting back to back."""
    counts = [0] * clients
    start = time.perf_counter()
    stop = start + seconds

    def client_loop(i: int) -> None:
        with httpx.Client(timeout=30) as client:
            while time.perf_counter() < stop and counts[i] < cap:
                post(client, url, png)
                counts[i] += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an exported model (fmnist-export); the server is started here")
    parser.add_argument("--url", help="a running fmnist-demo instead, e.g. http://127.0.0.1:7860")
    parser.add_argument("--data-root", type=Path, help="folder with FashionMNIST/raw/ (the uploaded test image)")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--per-client", type=int, default=5000, help="at most this many requests per client")
    args = parser.parse_args()
    if bool(args.model) == bool(args.url):
        parser.error("give exactly one of --model or --url")
    proc, url = start_server(args.model, args.data_root) if args.model else (None, args.url.rstrip("/"))
    try:
        png = test_png(args.data_root)
        times = np.array(latency(url, png, args.requests, args.warmup)) * 1000
        answered, elapsed = throughput(url, png, args.clients, args.seconds, args.per_client)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=15)
    print(f"CPU: {cpu_name()}; {len(png):,}-byte PNG upload")
    print(
        f"one request ({len(times)} sequential): p50 {np.percentile(times, 50):.2f} ms, "
        f"p95 {np.percentile(times, 95):.2f} ms"
    )
    print(
        f"{args.clients} concurrent clients: {answered} requests in {elapsed:.1f} s = "
        f"{answered / elapsed:.0f} requests/s"
    )


if __name__ == "__main__":
    main()
