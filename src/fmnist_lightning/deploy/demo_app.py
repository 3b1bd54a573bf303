"""The demo's web app (Starlette): one page, and the JSON API the page itself uses.

``POST /api/predict`` takes one image (a multipart ``file`` field, or the raw bytes as the body)
and answers with the classes and probabilities ``fmnist-predict`` gives for the same file: the
upload goes through ``data.image_files.read_image``, the same preparation, and the same classifier
(``deploy.predictors``). Bad input is a 4xx with ``{"error": "<one line>"}``; nothing a client
sends can stop the server. Uploads are written to the server's own temporary folder only.
"""

from __future__ import annotations

import base64
import io
import logging
import signal
import socket
import threading
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fmnist_lightning.data.fashion_mnist import CLASS_NAMES
from fmnist_lightning.data.image_files import read_image, top_classes
from fmnist_lightning.deploy.predictors import Classifier
from fmnist_lightning.errors import ConfigError, DataError, FmnistError, first_line, typed_line

PAGE = "demo_page.html"  # package data beside this module
UPLOAD_FIELD = "file"
# Bodies read as an HTML form (the image in its "file" field); any other body is the image itself.
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

log = logging.getLogger(__name__)


@dataclass
class DemoModel:
    """What the app serves: the classifier fmnist-predict would use, and what the model says of itself."""

    classify: Classifier
    card: dict[str, Any]
    top_k: int
    # Without the mirror image, where ``classify`` averages with it (a checkpoint whose run used TTA).
    plain: Classifier | None = None


@dataclass
class Limits:
    """What one upload may be: bytes on the wire, and pixels once decoded (a small PNG can hold a huge image)."""

    max_bytes: int
    max_pixels: int


@dataclass
class DemoState:
    model: DemoModel
    limits: Limits
    workdir: Path  # the server's temporary folder: uploads and the example images, nothing else
    examples: list[dict[str, Any]] = field(default_factory=list)
    # One prediction at a time: a checkpoint's Trainer is not made to be shared between threads.
    lock: threading.Lock = field(default_factory=threading.Lock)


class BadInput(HTTPException):
    """A 4xx whose detail is the one line the client sees."""


def _png_data_url(image: np.ndarray) -> str:
    """The 28x28 uint8 image the model sees, as an inline PNG for the page."""
    buffer = io.BytesIO()
    Image.fromarray(image[0]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _check_pixels(data: bytes, name: str, max_pixels: int) -> None:
    """Refuse an image too large to decode before decoding it (PIL reads the size from the header)."""
    too_large = f"{name}: {{}} megapixels, more than this server takes ({max_pixels / 1e6:.1f}; max_pixels=)"
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:  # beyond even PIL's own limit
        raise BadInput(413, too_large.format(f"over {(Image.MAX_IMAGE_PIXELS or 0) * 2 / 1e6:.0f}")) from exc
    except Exception:  # noqa: BLE001 - not an image PIL recognises: read_image says so in its own words
        return
    if width * height > max_pixels:
        raise BadInput(413, too_large.format(f"{width}x{height} is {width * height / 1e6:.1f}"))


def prepare(state: DemoState, data: bytes, name: str) -> np.ndarray:
    """The upload as fmnist-predict would read it from a file: written into the temp folder, read, deleted."""
    if not data:
        raise BadInput(400, f"{name}: empty upload (0 bytes)")
    _check_pixels(data, name, state.limits.max_pixels)
    path = state.workdir / f"upload-{uuid.uuid4().hex}{Path(name).suffix[:8]}"
    path.write_bytes(data)
    try:
        return read_image(path)
    except DataError as exc:
        raise BadInput(415, str(exc).replace(str(path), name)) from None
    finally:
        path.unlink(missing_ok=True)


def _top(probs: np.ndarray, k: int) -> list[dict[str, Any]]:
    return [{"class": name, "probability": p} for name, p in top_classes(probs, k)]


def answer(state: DemoState, image: np.ndarray, name: str) -> dict[str, Any]:
    """The prediction of one prepared image as the API returns it."""
    model = state.model
    batch = image[None]
    with state.lock:
        probs = model.classify(batch)[0]
        plain = model.plain(batch)[0] if model.plain is not None else None
    result = {
        "file": name,
        "top": _top(probs, model.top_k),
        "probabilities": dict(zip(CLASS_NAMES, map(float, probs), strict=True)),
        "tta": plain is not None,
        "model_input": _png_data_url(image),
    }
    if plain is not None:
        result["without_tta"] = _top(plain, model.top_k)
    return result


async def _upload(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The uploaded bytes and a name for messages; the size is checked before anything is read."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise BadInput(411, "send the image with a Content-Length (a multipart 'file' field, or the raw bytes)")
    if int(length) > max_bytes:
        raise BadInput(
            413, f"upload of {int(length):,} bytes is larger than this server takes ({max_bytes:,}; max_upload_mb=)"
        )
    if not request.headers.get("content-type", "").startswith(FORM_TYPES):
        return await request.body(), request.query_params.get("name", "upload")
    form = await request.form(max_files=1, max_fields=1)
    try:
        upload = form.get(UPLOAD_FIELD)
        if upload is None or isinstance(upload, str):
            raise BadInput(400, f"no file in the form: send the image as the multipart field '{UPLOAD_FIELD}'")
        return await upload.read(), upload.filename or "upload"
    finally:
        await form.close()


async def predict_endpoint(request: Request) -> Response:
    state: DemoState = request.app.state.demo
    data, name = await _upload(request, state.limits.max_bytes)
    image = await run_in_threadpool(prepare, state, data, name)
    return JSONResponse(await run_in_threadpool(answer, state, image, name))


async def model_endpoint(request: Request) -> Response:
    state: DemoState = request.app.state.demo
    return JSONResponse(
        {
            **state.model.card,
            "class_names": list(CLASS_NAMES),
            "top_k": state.model.top_k,
            "max_upload_bytes": state.limits.max_bytes,
            "max_pixels": state.limits.max_pixels,
        }
    )


async def examples_endpoint(request: Request) -> Response:
    return JSONResponse([{**e, "url": f"/examples/{e['name']}"} for e in request.app.state.demo.examples])


async def example_file(request: Request) -> Response:
    state: DemoState = request.app.state.demo
    # Only the names the server wrote itself: no path from the client reaches the file system.
    names = {e["name"] for e in state.examples}
    if request.path_params["name"] not in names:
        raise BadInput(404, f"no example {request.path_params['name']!r}")
    return FileResponse(state.workdir / "examples" / request.path_params["name"], media_type="image/png")


async def page(request: Request) -> Response:
    return HTMLResponse(resources.files(__package__).joinpath(PAGE).read_text(encoding="utf-8"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": first_line(exc)}, status_code=400)


class FailuresAsJson:
    """Whatever else goes wrong with one request (a model error, a full disk) is that request's 500 with one line,
    and one line on the server's console (the traceback in its log file); the server goes on serving the next one.

    Answered here, inside the app: Starlette's own last-resort handler answers too, but then raises the exception
    again for the server, and uvicorn prints its traceback on the console."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # one request's failure must not reach the server as a traceback
            log.error("%s %s failed: %s", scope["method"], scope["path"], typed_line(exc), exc_info=exc)
            if not started:  # otherwise the client has the start of an answer, and the server closes it
                await JSONResponse({"error": typed_line(exc)}, status_code=500)(scope, receive, send)


def create_app(model: DemoModel, limits: Limits, workdir: Path, examples: list[dict[str, Any]]) -> Starlette:
    """The app serving ``model``; ``workdir`` is the only folder it writes to (``examples`` are PNGs in its
    ``examples/``)."""
    routes = [
        Route("/", page),
        Route("/api/predict", predict_endpoint, methods=["POST"]),
        Route("/api/model", model_endpoint),
        Route("/api/examples", examples_endpoint),
        Route("/examples/{name}", example_file),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(FailuresAsJson)],
        exception_handlers={HTTPException: _http_error, FmnistError: _bad_input},
    )
    app.state.demo = DemoState(model, limits, workdir, examples)
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before serving so that a port in use is one error line rather than uvicorn's exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it every answer
    # on a kept-alive connection waits ~40 ms for a delayed ACK (Nagle's algorithm).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another port= or host="
        ) from exc
    return sock


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run_server(app: Starlette, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl+C or SIGTERM, and return (or exit) so the caller's cleanup runs.

    uvicorn shuts down on either signal and then raises it again; a SIGTERM with its default action
    would kill the process there and leave the temporary folder behind.
    """
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        # log_config=None: uvicorn's records go through the command's own handlers (one line each, secrets masked,
        # the log file), not handlers of its own on the console.
        config = uvicorn.Config(app, log_level="warning", log_config=None, timeout_graceful_shutdown=2)
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        print("Stopped.")
    finally:
        signal.signal(signal.SIGTERM, previous)
