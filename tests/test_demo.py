"""``fmnist-demo``: a real server on a free loopback port, its API against ``fmnist-predict`` on the same files,
bad input as 4xx with the server still up, and the page itself in headless Chromium (Playwright)."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from conftest import compose_cfg, run_cli
from fmnist_lightning.data.idx_files import load_split

N_IMAGES = 20  # test images compared with fmnist-predict
TOP_K = 3
STARTUP_S = 90
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny TinyVGG whose run tests with mirror TTA (8 steps), and its ONNX export: (checkpoint, model.onnx)."""
    from fmnist_lightning.export import export
    from fmnist_lightning.train import train
    from test_export import export_cfg

    out = tmp_path_factory.mktemp("demo_run")
    train(
        compose_cfg(
            data_root,
            out,
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=8",
            "trainer.limit_val_batches=1",
            "test=false",
            "module.tta=true",
        )
    )
    GlobalHydra.instance().clear()
    checkpoint = out / "checkpoints" / "last.ckpt"
    export(export_cfg(f"ckpt_path={checkpoint}", f"data_root={data_root}", f"out={out / 'export'}"))
    return checkpoint, out / "export" / "tinyvgg.onnx"


@pytest.fixture(scope="module")
def images(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first test images as PNG files, 4x enlarged so the preparation (crop, fit) does real work."""
    folder = tmp_path_factory.mktemp("demo_images")
    for i, image in enumerate(load_split(data_root, "test")[0][:N_IMAGES]):
        Image.fromarray(image[0].numpy()).resize((112, 112)).save(folder / f"{i:02d}.png")
    return folder


def predicted(model_arg: str, folder: Path, tmp: Path) -> dict[str, list[tuple[str, float]]]:
    """fmnist-predict's top classes and probabilities per file name, read from its CSV."""
    out = tmp / f"predict-{abs(hash(model_arg))}.csv"
    result = run_cli(
        "-m",
        "fmnist_lightning.predict",
        model_arg,
        f"inputs={folder}",
        f"csv={out}",
        f"top_k={TOP_K}",
        f"paths.log_dir={tmp / 'logs'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with out.open() as f:
        return {
            Path(r["file"]).name: [(r[f"class_{k}"], float(r[f"prob_{k}"])) for k in range(1, TOP_K + 1)]
            for r in csv.DictReader(f)
        }


class Server:
    """``fmnist-demo`` in its own process on a port it picks itself (port=0, bound before it prints its URL, so no
    other test's server can take it in between): its URL and the temporary folder it says it writes to."""

    def __init__(self, *args: str, log_dir: Path) -> None:
        cmd = [sys.executable, "-m", "fmnist_lightning.demo", *args, "port=0", f"paths.log_dir={log_dir}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # The first line it prints once the model is loaded, or whatever it printed before exiting.
        first = self.proc.stdout.readline()
        if not first.startswith("Serving "):
            self.proc.kill()
            pytest.fail(f"fmnist-demo did not start: {first}{self.proc.communicate()[0][-2000:]}")
        self.url = re.search(r" on (http://\S+?)/ ", first).group(1)
        self.workdir = Path(re.search(r"temporary files in (\S+)\)", first).group(1))
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/model", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        self.proc.kill()
        pytest.fail(f"fmnist-demo did not answer within {STARTUP_S} s")

    def written(self) -> set[str]:
        """Every file under its temporary folder, relative to it."""
        return {str(p.relative_to(self.workdir)) for p in self.workdir.rglob("*") if p.is_file()}

    def stop(self) -> str:
        self.proc.terminate()
        try:
            output = self.proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output = self.proc.communicate()[0]
        assert not self.workdir.exists(), "the temporary folder outlived the server"
        return output


@pytest.fixture(scope="module")
def server(trained: tuple[Path, Path], data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(
        f"model={trained[1]}", f"data_root={data_root}", "max_upload_mb=1", log_dir=tmp_path_factory.mktemp("demo_logs")
    )
    yield running
    output = running.stop()
    assert "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def onnx_server(server: Server) -> str:
    return server.url


def api_predict(url: str, path: Path) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(f"{url}/api/predict", files={"file": (path.name, f, "image/png")}, timeout=30)


def assert_same_as_predict(url: str, folder: Path, expected: dict[str, list[tuple[str, float]]]) -> list[dict]:
    answers = []
    for path in sorted(folder.iterdir()):
        response = api_predict(url, path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert [t["class"] for t in body["top"]] == [name for name, _ in expected[path.name]]
        # The CSV rounds to 6 decimals.
        assert np.allclose([t["probability"] for t in body["top"]], [p for _, p in expected[path.name]], atol=1e-6)
        answers.append(body)
    return answers


def test_api_gives_what_predict_gives_for_an_exported_model(
    onnx_server: str, trained: tuple[Path, Path], images: Path, tmp_path: Path
) -> None:
    answers = assert_same_as_predict(onnx_server, images, predicted(f"model={trained[1]}", images, tmp_path))
    assert len(answers) == N_IMAGES and len({a["top"][0]["class"] for a in answers}) > 1
    assert all(a["model_input"].startswith("data:image/png;base64,") and not a["tta"] for a in answers)
    card = httpx.get(f"{onnx_server}/api/model").json()
    assert dict(card["rows"])["model"] == "tinyvgg" and "test accuracy" in dict(card["rows"])
    examples = httpx.get(f"{onnx_server}/api/examples").json()
    assert len(examples) == 10 and httpx.get(onnx_server + examples[0]["url"]).headers["content-type"] == "image/png"


def bad_uploads(tmp_path: Path, good: Path) -> list[tuple[str, dict, int, str]]:
    """(what, httpx.post keyword arguments, expected status, a phrase of the one-line error)."""
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6500)).save(huge)  # 52 megapixels in about 50 kB
    return [
        ("a text file", {"files": {"file": ("notes.txt", b"not an image\n", "text/plain")}}, 415, "not an image"),
        ("an empty upload", {"files": {"file": ("empty.png", b"", "image/png")}}, 400, "empty upload"),
        ("a 52-megapixel image", {"files": {"file": ("huge.png", huge.read_bytes(), "image/png")}}, 413, "megapixels"),
        (
            "a truncated PNG",
            {"files": {"file": ("cut.png", good.read_bytes()[:200], "image/png")}},
            415,
            "cannot read image",
        ),
        ("2 MB over a 1 MiB limit", {"content": os.urandom(2_000_000)}, 413, "larger than this server takes"),
        ("a form without the file", {"data": {"other": "1"}}, 400, "no file in the form"),
        (
            "broken multipart",
            {"content": b"garbage", "headers": {"content-type": "multipart/form-data; boundary=x"}},
            400,
            "",
        ),
    ]


def test_bad_input_is_a_4xx_with_one_line_and_the_server_stays_up(
    onnx_server: str, images: Path, tmp_path: Path
) -> None:
    for what, kwargs, status, phrase in bad_uploads(tmp_path, images / "00.png"):
        response = httpx.post(f"{onnx_server}/api/predict", timeout=30, **kwargs)
        assert response.status_code == status, (what, response.text)
        error = response.json()["error"]
        assert phrase in error and "\n" not in error and "Traceback" not in error, (what, error)
    assert httpx.get(f"{onnx_server}/api/predict").status_code == 405
    assert httpx.get(f"{onnx_server}/examples/..%2F..%2Fetc%2Fpasswd").status_code == 404
    assert api_predict(onnx_server, images / "00.png").status_code == 200  # still serving


def test_the_server_keeps_no_uploads(server: Server, images: Path) -> None:
    assert api_predict(server.url, images / "01.png").status_code == 200
    httpx.post(f"{server.url}/api/predict", files={"file": ("notes.txt", b"not an image", "text/plain")})
    # Only the example images it wrote at start; stop() checks that the folder goes with the server.
    assert server.written() == {f"examples/{e['name']}" for e in httpx.get(f"{server.url}/api/examples").json()}


def test_a_failure_of_the_server_is_a_500_and_one_line_and_it_goes_on_serving(
    trained: tuple[Path, Path], data_root: Path, images: Path, tmp_path: Path
) -> None:
    # A real failure of the server's own: the temporary folder it writes uploads into is gone (a cleaner, a
    # full disk). Starlette answers such a failure and raises it again, for uvicorn to print its traceback.
    running = Server(f"model={trained[1]}", f"data_root={data_root}", log_dir=tmp_path / "logs")
    moved = running.workdir.with_name(running.workdir.name + "-away")
    try:
        running.workdir.rename(moved)
        response = api_predict(running.url, images / "00.png")
        assert response.status_code == 500
        error = response.json()["error"]
        assert error.startswith("FileNotFoundError: ") and "\n" not in error, error
        moved.rename(running.workdir)
        assert api_predict(running.url, images / "00.png").status_code == 200  # still serving
    finally:
        if moved.exists():
            moved.rename(running.workdir)
        output = running.stop()
    assert "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "POST /api/predict failed" in line]
    assert "FileNotFoundError" in line and "(traceback in " in line, line
    log_file = Path(line.rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert "Traceback (most recent call last)" in log_file.read_text()


def test_a_checkpoint_whose_run_used_tta_shows_both_results(
    trained: tuple[Path, Path], data_root: Path, images: Path, tmp_path: Path
) -> None:
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(images.iterdir())[:3]:
        shutil.copy(path, few)
    running = Server(f"ckpt_path={trained[0]}", f"data_root={data_root}", "accelerator=cpu", log_dir=tmp_path / "logs")
    url = running.url
    try:
        answers = assert_same_as_predict(url, few, predicted(f"ckpt_path={trained[0]}", few, tmp_path))
        assert all(a["tta"] and len(a["without_tta"]) == TOP_K for a in answers)
        rows = dict(httpx.get(f"{url}/api/model").json()["rows"])
        assert rows["mirror TTA"] == "on" and rows["format"] == "checkpoint" and "code" in rows  # provenance
    finally:
        running.stop()


def test_a_model_file_that_is_not_ours_is_one_error_line(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_text("not a model")
    for args in ([f"model={fake}"], [f"ckpt_path={fake}"], []):
        result = run_cli("-m", "fmnist_lightning.demo", *args, f"paths.log_dir={tmp_path / 'logs'}")
        assert result.returncode == 2, result.stderr[-2000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in result.stderr, result.stderr[-2000:]
    # An impossible setting is refused before the model is read.
    for option, line in (
        ("port=70000", "error: port=70000 is not a TCP port: it must be in 0-65535 (0: any free port), e.g. port=7860"),
        ("max_upload_mb=big", "error: max_upload_mb='big' is str, not a number: it must be an upload limit in MB > 0"),
    ):
        result = run_cli("-m", "fmnist_lightning.demo", f"model={fake}", option, f"paths.log_dir={tmp_path / 'logs'}")
        assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(line), result.stderr[-2000:]


# Debian's chromium, quiet and local: no GPU, no QUIC, no background or update traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)"
)
def test_the_page_in_headless_chromium(
    onnx_server: str, trained: tuple[Path, Path], images: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    image = images / "00.png"
    expected = predicted(f"model={trained[1]}", images, tmp_path)[image.name][0][0]
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    with sync_playwright() as p, tempfile.TemporaryDirectory(dir=tmp_path) as profile:
        # A persistent context is how Playwright takes a user-data-dir of ours: a fresh one, in the test's temp dir.
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(onnx_server)
            page.set_input_files("#files", str(image))
            top = page.locator(f'.result[data-file="{image.name}"] .top-class')
            assert top.inner_text(timeout=20_000) == expected
            page.set_input_files("#files", str(notes))
            error = page.locator('.result[data-file="notes.txt"] .error')
            assert "not an image" in error.inner_text(timeout=20_000)
            page.wait_for_selector("#card table", timeout=20_000)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 0
