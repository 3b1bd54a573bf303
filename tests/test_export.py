"""Export to ONNX, torch.export (.pt2) and TorchScript, verified against the checkpoint, each model one file;
predict from the exported file without Lightning."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image

from conftest import N_TEST, compose_cfg, run_cli
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import INIT_ARGS
from fmnist_lightning.config.output_dirs import STAGING_PREFIX
from fmnist_lightning.config.processes import HOST_TAG
from fmnist_lightning.data.fashion_mnist import CLASS_NAMES
from fmnist_lightning.data.idx_files import load_split
from fmnist_lightning.deploy.parity import check_parity
from fmnist_lightning.deploy.runtime import METADATA_FILE, METADATA_KEY, load_exported
from fmnist_lightning.errors import CheckpointError, ConfigError, ExportError
from fmnist_lightning.export import export


@pytest.fixture(scope="session")
def checkpoint(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TinyVGG trained in-process (8 steps): enough for its predictions to differ between images."""
    from fmnist_lightning.train import train

    out = tmp_path_factory.mktemp("export_run")
    train(
        compose_cfg(
            data_root,
            out,
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=8",
            "trainer.limit_val_batches=1",
            "test=false",
        )
    )
    GlobalHydra.instance().clear()
    return out / "checkpoints" / "last.ckpt"


def export_cfg(*overrides: str) -> DictConfig:
    """The real ``export`` config, composed as the CLI composes it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
            return compose(config_name="export", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def _export(checkpoint: Path, data_root: Path, out: Path, *overrides: str) -> dict:
    return export(export_cfg(f"ckpt_path={checkpoint}", f"data_root={data_root}", f"out={out}", *overrides))


def test_onnx_export_is_verified_and_carries_its_metadata(checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    summary = _export(checkpoint, data_root, tmp_path)
    path = tmp_path / "tinyvgg.onnx"
    assert summary["file"] == str(path) and summary["parity"]["ok"]
    assert summary["parity"]["images"] == N_TEST and summary["parity"]["top1_differ"] == 0
    assert summary["parity"]["max_abs_prob_diff"] <= 1e-4
    assert json.loads((tmp_path / "export.json").read_text())["parity"] == summary["parity"]

    meta = json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}[METADATA_KEY])
    assert meta["class_names"] == list(CLASS_NAMES)
    assert "[N, 1, 28, 28] in [0, 1]" in meta["input"] and meta["source_checkpoint"] == str(checkpoint)
    assert 0 <= meta["test_accuracy"] <= 1 and meta["test_images"] == N_TEST

    # Any batch size; what goes in is [0, 1] pixels, what comes out are probabilities.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = load_split(data_root, "test")[0][:7].float().numpy() / 255
    for n in (1, 7):
        probs = session.run(None, {"images": images[:n]})[0]
        assert probs.shape == (n, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_torchscript_export_is_verified_and_carries_its_metadata(
    checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    summary = _export(checkpoint, data_root, tmp_path, "format=torchscript")
    assert summary["parity"]["ok"] and summary["parity"]["top1_differ"] == 0
    extra = {METADATA_FILE: ""}
    scripted = torch.jit.load(str(tmp_path / "tinyvgg.pt"), _extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["class_names"] == list(CLASS_NAMES)
    assert scripted(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_a_tampered_normalisation_fails_the_parity_check(checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    _export(checkpoint, data_root, tmp_path)
    path = tmp_path / "tinyvgg.onnx"
    model = onnx.load(str(path))
    (mean,) = [init for init in model.graph.initializer if init.name == "mean"]
    mean.CopyFrom(onnx.numpy_helper.from_array(np.array(0.5, dtype=np.float32), "mean"))  # "half" instead of "dataset"
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))

    images = load_split(data_root, "test")[0].float().numpy() / 255
    reference = load_exported(path).probabilities(images)
    check_parity(path, images, reference, 1e-4)  # the untouched file passes
    with pytest.raises(
        ExportError, match=r"parity check failed for .*tampered\.onnx: \d+ of 200 test images get another"
    ):
        check_parity(tampered, images, reference, 1e-4)


def test_an_opset_the_exporter_cannot_write_is_one_error_line_and_keeps_the_earlier_export(
    checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    _export(checkpoint, data_root, tmp_path)
    earlier = {name: (tmp_path / name).read_bytes() for name in ("tinyvgg.onnx", "export.json")}
    # What an export killed by SIGKILL leaves: its staging folder, named for a process that is gone.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f"{STAGING_PREFIX}{HOST_TAG}-{gone.stdout.strip()}-x1").mkdir()
    result = run_cli(
        "-m",
        "fmnist_lightning.export",
        f"ckpt_path={checkpoint}",
        f"data_root={data_root}",
        f"out={tmp_path}",
        "opset=7",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    # One line: the exporter's own fallback warning and its converter's traceback are kept off the console.
    assert result.stderr.strip() == (
        "error: opset=7 cannot be written by torch's ONNX exporter (it wrote opset 18); use opset=18 or newer"
    )
    # The failed export replaced nothing: the earlier file and the export.json describing it are as they were,
    # and nothing unverified is left behind, the killed export's folder included.
    assert {name: (tmp_path / name).read_bytes() for name in earlier} == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "logs") == ["export.json", "tinyvgg.onnx"]


def test_an_export_of_another_checkpoint_in_out_is_kept_and_out_must_be_a_folder(
    checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deploy"
    _export(checkpoint, data_root, out)
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    # The same checkpoint again (another format) joins its earlier files, as a rebuild would.
    _export(checkpoint, data_root, out, "format=torchscript")
    assert (out / "tinyvgg.pt").is_file() and (out / "tinyvgg.onnx").read_bytes() == kept["tinyvgg.onnx"]
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    other = tmp_path / "other.ckpt"
    other.write_bytes(checkpoint.read_bytes())
    with pytest.raises(ConfigError, match=rf"^out={out} holds the export of {checkpoint.resolve()} \(export\.json\)"):
        _export(other, data_root, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept
    afile = tmp_path / "model.onnx"
    afile.write_text("mine")
    with pytest.raises(ConfigError, match=r"is a file; out= names the folder the export goes into"):
        _export(checkpoint, data_root, afile)
    assert afile.read_text() == "mine"


def test_bad_export_inputs_are_one_line_errors(checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        _export(tmp_path / "missing.ckpt", data_root, tmp_path)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="was not written by a fmnist_lightning training run"):
        _export(foreign, data_root, tmp_path)
    with pytest.raises(ConfigError, match="unknown format='tflite'; choose one of: onnx, torchscript"):
        _export(checkpoint, data_root, tmp_path, "format=tflite")

    result = run_cli(
        "-m", "fmnist_lightning.export", f"ckpt_path={tmp_path / 'missing.ckpt'}", f"paths.log_dir={tmp_path / 'logs'}"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: checkpoint not found: {tmp_path / 'missing.ckpt'}; pass the file of a run")
    )
    with pytest.raises(ConfigError, match=r"atol='tight' is str, not a number: .* e\.g\. atol=1e-4"):
        _export(checkpoint, data_root, tmp_path, "atol=tight")


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_quantization_reports_accuracy_change_and_size(
    mode: str, checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    summary = _export(checkpoint, data_root, tmp_path, f"quantize={mode}")
    q = summary["quantized"]
    assert Path(q["file"]).is_file() and q["mode"] == mode and q["bytes"] < summary["bytes"]
    assert q["accuracy_change"] == pytest.approx(q["test_accuracy"] - summary["metadata"]["test_accuracy"])
    assert q["calibration_images"] == (500 if mode == "static" else 0)
    assert load_exported(q["file"]).probabilities(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)


def _top1(csv_path: Path) -> dict[str, str]:
    with csv_path.open() as fh:
        return {row["file"]: row["class_1"] for row in csv.DictReader(fh)}


def test_predict_from_the_onnx_file_matches_the_checkpoint_without_lightning(
    checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    _export(checkpoint, data_root, tmp_path / "export")
    images = load_split(data_root, "test")[0][::10]
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:02d}.png")

    by_checkpoint = run_cli(
        "-m",
        "fmnist_lightning.predict",
        f"ckpt_path={checkpoint}",
        f"inputs={folder}",
        f"csv={tmp_path / 'ckpt.csv'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    )
    assert by_checkpoint.returncode == 0, by_checkpoint.stderr[-2000:]
    # -X importtime lists every module the command imports: the exported-model path must not need Lightning.
    cmd = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "fmnist_lightning.predict",
        f"model={tmp_path / 'export' / 'tinyvgg.onnx'}",
        f"inputs={folder}",
        f"csv={tmp_path / 'onnx.csv'}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    by_onnx = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert by_onnx.returncode == 0, by_onnx.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in by_onnx.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported
    assert not {name for name in imported if name.split(".")[0] in ("lightning", "pytorch_lightning", "torch")}

    expected, got = _top1(tmp_path / "ckpt.csv"), _top1(tmp_path / "onnx.csv")
    assert len(expected) == 20 and got == expected
    assert len(set(got.values())) > 1  # a model that tells classes apart, so the comparison means something


def test_export_writes_exactly_the_files_it_lists_and_the_onnx_file_stands_alone(
    checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    summary = _export(checkpoint, data_root, out, "quantize=static", "calibration_images=100")
    listed = {Path(f["path"]) for f in summary["files"]}
    assert listed == {out / "tinyvgg.onnx", out / "tinyvgg.int8-static.onnx"}
    assert set(out.iterdir()) == listed | {out / "export.json"}  # no .onnx.data, no leftovers
    assert all(Path(f["path"]).stat().st_size == f["bytes"] for f in summary["files"])
    # The .onnx file alone, elsewhere, computes what the export measured.
    alone = tmp_path / "elsewhere" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes((out / "tinyvgg.onnx").read_bytes())
    images, labels = load_split(data_root, "test")
    probs = load_exported(alone).probabilities(images.float().numpy() / 255)
    assert float((probs.argmax(1) == labels.numpy()).mean()) == summary["metadata"]["test_accuracy"]


def test_pt2_export_passes_parity_and_serves_any_batch(checkpoint: Path, data_root: Path, tmp_path: Path) -> None:
    summary = _export(checkpoint, data_root, tmp_path, "format=pt2")
    path = tmp_path / "tinyvgg.pt2"
    assert summary["file"] == str(path) and summary["parity"]["ok"] and summary["parity"]["images"] == N_TEST
    extra = {METADATA_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    assert json.loads(extra[METADATA_FILE])["class_names"] == list(CLASS_NAMES)
    model = load_exported(path)
    images = load_split(data_root, "test")[0][:7].float().numpy() / 255
    for n in (1, 7):
        probs = model.probabilities(images[:n])
        assert probs.shape == (n, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)


def planted_near_tie(checkpoint: Path, data_root: Path, out: Path) -> tuple[Path, int, tuple[int, int]]:
    """The checkpoint with its head's bias moved so that one real test image's top two classes tie to a
    hair's breadth: the image, and its two classes (first the one the checkpoint ranks first)."""
    from fmnist_lightning.data.datamodule import normalize
    from fmnist_lightning.data.fashion_mnist import NORMALIZATION
    from fmnist_lightning.training.checkpoint_files import restore_run

    run = restore_run(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    image = load_split(data_root, "test")[0][:1]
    with torch.inference_mode():
        logits = run.module.eval()(normalize(image, *NORMALIZATION["dataset"]))[0]
    second, first = logits.argsort()[-2:].tolist()
    (bias,) = [k for k in state["state_dict"] if k.startswith("net.") and k.endswith("bias")][-1:]
    state["state_dict"][bias][second] += logits[first] - logits[second] - 1e-6  # a hair below the first
    planted = out / "near_tie.ckpt"
    torch.save(state, planted)
    return planted, 0, (first, second)


def test_a_near_tie_exports_and_a_real_difference_still_fails(
    checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    planted, index, (first, second) = planted_near_tie(checkpoint, data_root, tmp_path)
    summary = _export(planted, data_root, tmp_path / "out")  # exports whichever way rounding orders the tie
    assert summary["parity"]["ok"] and summary["parity"]["near_ties"] in (0, 1)
    path = Path(summary["file"])
    images = load_split(data_root, "test")[0].float().numpy() / 255
    reference = load_exported(path).probabilities(images)
    assert abs(reference[index, first] - reference[index, second]) < 1e-4  # the planted tie is in the file
    # The checkpoint ranking the tied pair the other way: a near-tie, not a difference.
    swapped = reference.copy()
    swapped[index, [first, second]] = swapped[index, [second, first]]
    result = check_parity(path, images, swapped, 1e-4)
    assert result["near_ties"] == 1 and result["top1_differ"] == 0
    # A real difference on another image (the checkpoint sure of another class) still fails, in one line.
    moved = swapped.copy()
    moved[1] = np.eye(10, dtype=moved.dtype)[(reference[1].argmax() + 1) % 10]
    with pytest.raises(
        ExportError,
        match=r"^parity check failed .*: 1 of 200 test images get another top-1 class "
        r"\(besides 1 near-ties\)",
    ):
        check_parity(path, images, moved, 1e-4)


def test_a_model_file_of_the_wrong_kind_says_which_command_takes_it(tmp_path: Path) -> None:
    from fmnist_lightning.training.checkpoint_files import load_checkpoint

    # A PyTorch archive under an exported model's name: a checkpoint somebody renamed.
    renamed = tmp_path / "model.onnx"
    torch.save({"state_dict": {}}, renamed)
    with pytest.raises(
        CheckpointError,
        match=rf"not a readable ONNX model .*; it is a PyTorch checkpoint: pass it as ckpt_path={renamed}$",
    ):
        load_exported(renamed)
    exported = tmp_path / "exported.onnx"
    exported.write_bytes(b"\x08\x07" + bytes(64))
    with pytest.raises(
        CheckpointError, match=rf"; an exported model is classified with fmnist-predict model={exported}$"
    ):
        load_checkpoint(exported)
    cut = tmp_path / "last.ckpt"
    cut.write_bytes(renamed.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"pass a \.ckpt a training run wrote \(its checkpoints/ folder\), whole"):
        load_checkpoint(cut)
