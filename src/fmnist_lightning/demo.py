"""``python -m fmnist_lightning.demo (model=<file.onnx|.pt2> | ckpt_path=<file.ckpt>) [port=7860] [host=127.0.0.1]``.

Also ``fmnist-demo``. Serves a page where you upload, paste, drag or draw an image, or pick a test-set
example, and see what the model makes of it; beside it a JSON API (``deploy.demo_app``; docs/demo.md).
Images are prepared and classified exactly as ``fmnist-predict`` does; an exported ONNX model is served
without importing torch or Lightning.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from fmnist_lightning.cli.commands import hydra_command
from fmnist_lightning.config.checks import check_values, positive, whole
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.predict import model_file_arguments

if TYPE_CHECKING:
    from fmnist_lightning.deploy.demo_app import DemoModel

USAGE = "python -m fmnist_lightning.demo model=<file.onnx> (or ckpt_path=<file.ckpt>) [port=7860] [host=127.0.0.1]"
MIB = 1024 * 1024
OPTION_CHECKS = (
    whole("port", 0, "a TCP port in 0-65535 (0: any free port)", "port=7860"),
    whole("examples", 0, "a number of test-set examples >= 0", "examples=10"),
    whole("top_k", 1, "a number of classes >= 1", "top_k=3"),
    whole("batch_size", 1, "a batch size >= 1", "batch_size=256"),
    positive("max_upload_mb", "an upload limit in MB > 0", "max_upload_mb=20"),
    whole("max_pixels", 1, "a pixel limit >= 1", "max_pixels=40000000"),
)


def check(cfg: DictConfig) -> None:
    """Refuse a missing or doubled model and impossible limits before anything is loaded."""
    if bool(cfg.get("ckpt_path")) == bool(cfg.get("model_file")):
        raise ConfigError(
            f"give exactly one of ckpt_path= (a training checkpoint) or model= (an exported file): {USAGE}"
        )
    check_values(cfg, OPTION_CHECKS)
    if int(cfg.port) > 65535:
        raise ConfigError(
            f"port={cfg.port} is not a TCP port: it must be in 0-65535 (0: any free port), e.g. port=7860"
        )


def load_model(cfg: DictConfig) -> tuple[DemoModel, Path]:
    """The model to serve, and the data root its test-set examples come from."""
    from fmnist_lightning.deploy.demo_app import DemoModel
    from fmnist_lightning.deploy.model_card import checkpoint_card, default_data_root, exported_card

    if cfg.get("model_file"):
        # Imported here, and nothing of torch with it: an ONNX model is served on onnxruntime alone.
        from fmnist_lightning.deploy.predictors import exported_classifier
        from fmnist_lightning.deploy.runtime import load_exported

        model = load_exported(cfg.model_file)
        classify = exported_classifier(model, int(cfg.batch_size), bool(cfg.tta))
        return DemoModel(classify, exported_card(model), int(cfg.top_k)), Path(cfg.data_root or default_data_root())
    from fmnist_lightning.deploy.predictors import without_tta
    from fmnist_lightning.predict import restored_classifier

    classify, run = restored_classifier(cfg)
    plain = without_tta(run, classify) if run.module.tta else None
    root = cfg.data_root or run.config["data"].get("root") or default_data_root()
    return DemoModel(classify, checkpoint_card(run), int(cfg.top_k), plain), Path(root).expanduser()


def serve(cfg: DictConfig) -> None:
    """Load the model, write the examples into a fresh temporary folder and serve until interrupted."""
    check(cfg)
    try:
        from fmnist_lightning.deploy.demo_app import Limits, create_app, listening_socket, run_server
    except ImportError as exc:
        raise ConfigError(
            f"fmnist-demo needs the demo extra ({exc.name} is missing): pip install -e '.[demo]'"
        ) from exc
    from fmnist_lightning.deploy.model_card import write_examples

    model, data_root = load_model(cfg)
    sock = listening_socket(str(cfg.host), int(cfg.port))
    with tempfile.TemporaryDirectory(prefix="fmnist-demo-") as workdir:
        # Uploads the multipart parser spools to disk go here too, not to the system's temp folder.
        tempfile.tempdir = workdir
        try:
            examples = write_examples(data_root, int(cfg.examples), Path(workdir) / "examples")
            limits = Limits(int(float(cfg.max_upload_mb) * MIB), int(cfg.max_pixels))
            host, port = sock.getsockname()[:2]
            print(
                f"Serving {model.card['rows'][0][1]} on http://{host}:{port}/ (API: POST /api/predict; "
                f"temporary files in {workdir}); Ctrl+C stops",
                flush=True,
            )
            run_server(create_app(model, limits, Path(workdir), examples), sock)
        finally:
            tempfile.tempdir = None


# Lightning is not routed up front: an exported ONNX model is served without importing it.
cli = hydra_command("demo", serve, arguments=model_file_arguments)


if __name__ == "__main__":
    cli()
