"""Shared fixtures: small real IDX datasets and Hydra-composed configs pointing at them."""

from __future__ import annotations

import inspect
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

# The tests' own callbacks (test_resume.SigtermAt, ...) and bench/'s (gpu_check.DeviceProbe) are targets their
# configs may build (config/hydra_compat.py): set before the package reads it, inherited by every CLI a test starts.
os.environ["FMNIST_TRUSTED_TARGETS"] = "test_resume.*,test_ema.*,test_mix.*,gpu_check.*,step_timer.*"

from fmnist_lightning.cli.known_warnings import as_pytest_filters
from fmnist_lightning.config.files import CONF_DIR, project_root
from fmnist_lightning.config.hydra_compat import HAS_WHITELIST, INIT_ARGS, TARGETS
from fmnist_lightning.data.idx_files import RAW_FILES, load_split, resolve_data_root

N_TRAIN, N_TEST = 600, 200

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: one torch thread each (and in the CLIs they start), or the workers'
    # thread pools fight over the cores and every test runs several times slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    # One list of known-harmless warnings, for the entry points and the tests alike.
    for line in as_pytest_filters():
        config.addinivalue_line("filterwarnings", line)


# Session fixtures that train a run, start a server or a sweep: a test that takes one is an integration test.
INTEGRATION_FIXTURES = {
    "trained",
    "trained_run",
    "checkpoint",
    "checkpoint_path",
    "recorded_run",
    "finished_run",
    "uninterrupted",
    "lr_sweep",
    "mlflow_server",
    "server",
    "onnx_server",
    "checkout",
}
# ... and so is one that runs the CLI, trains in-process or starts a process of its own.
INTEGRATION_CALLS = re.compile(
    r"\b(run_cli|cli_overrides|train|find_lr|multirun|search|subprocess\.(run|Popen|check_output)|[.]fit)\("
)


# The Makefile's tiers. A tier is chosen with --tier, not with -m, so that a -m of the user's own
# (make test ARGS='-m "not slow"') narrows the tier instead of replacing it.
TIERS = {
    "fast": lambda item: not any(item.get_closest_marker(m) for m in ("integration", "slow", "hosts", "cuda")),
    "full": lambda item: item.get_closest_marker("hosts") is None,
    "hosts": lambda item: item.get_closest_marker("hosts") is not None,
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", choices=sorted(TIERS), help="the Makefile's test tier: fast, full (no hosts), hosts")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark integration tests (see above), so that ``make test-fast`` runs the unit and compose tests alone;
    then keep the tests of ``--tier``, if one is chosen."""
    mark_integration(items)
    tier = config.getoption("--tier")
    if tier:
        dropped = [item for item in items if not TIERS[tier](item)]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = [item for item in items if TIERS[tier](item)]
    slow_first(items)


def slow_first(items: list[pytest.Item]) -> None:
    """The files that hold ``slow`` tests first, each file's tests kept together and in order: ``--dist loadfile``
    hands out files in this order, so a minute-long file does not start last while the other worker sits idle."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


def mark_integration(items: list[pytest.Item]) -> None:
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if (
            INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ()))
            or INTEGRATION_CALLS.search(source)
            or item.get_closest_marker("slow")
            or item.get_closest_marker("hosts")
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def hydra_execution_whitelist() -> Iterator[None]:
    """Hydra >= 1.4: the project's targets for the instantiate() calls tests make themselves (1.3 has no whitelist)."""
    if not HAS_WHITELIST:
        yield
        return
    from hydra.utils import execution_whitelist

    with execution_whitelist(TARGETS):
        yield


SHARED_DATA = project_root().parent / "shared" / "data"


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format of the official files (magic 0x0803 images, 0x0801 labels)."""
    magic = 0x0800 + tensor.dim()
    header = struct.pack(f">i{tensor.dim()}i", magic, *tensor.shape)
    path.write_bytes(header + tensor.to(torch.uint8).contiguous().numpy().tobytes())


def write_dataset(
    root: Path, train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor]
) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("test", test)):
        images_name, labels_name = RAW_FILES[split]
        write_idx(raw / images_name, images.reshape(-1, 28, 28))
        write_idx(raw / labels_name, labels)
    return root


def _subset(images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    # n/10 images of every class, so small splits stay balanced.
    idx = torch.cat([torch.nonzero(labels == c).flatten()[: n // 10] for c in range(10)])
    return images[idx], labels[idx]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 train / 200 test real Fashion-MNIST images (from ../shared/data), or class-coded noise without it."""
    root = tmp_path_factory.mktemp("fmnist")
    if (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        train = _subset(*load_split(SHARED_DATA, "train"), N_TRAIN)
        test = _subset(*load_split(SHARED_DATA, "test"), N_TEST)
    else:
        g = torch.Generator().manual_seed(0)

        def fake(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.arange(n) % 10
            images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
            images[torch.arange(n), 0, labels * 2 + 4, 4:24] = 255  # a learnable stripe per class
            return images, labels

        train, test = fake(N_TRAIN), fake(N_TEST)
    return write_dataset(root, train, test)


BASE_OVERRIDES = [
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.enable_progress_bar=false",
    "data.download=false",
    "data.val_size=100",
    "data.batch_size=32",
    "data.eval_batch_size=100",
]


# Result figures (TensorBoard) and report.md cost about 2.5 s of matplotlib per run. The tests of
# figures and reports ask for them (figures=True); the others leave them out.
NO_FIGURES = ["report=false", "++callbacks.evaluation_figures=null"]


def compose_cfg(data_root: Path, output_dir: Path, *overrides: str, figures: bool = False) -> DictConfig:
    """Compose the real root config, as the CLI would, with the tiny dataset and ``output_dir`` as the run dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=[*BASE_OVERRIDES, *([] if figures else NO_FIGURES), f"data.root={data_root}", *overrides],
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        # Stores shared by runs (logger=mlflow's outputs/mlflow/) go beside the run, not into the checkout.
        cfg.paths.log_dir = str(Path(output_dir).parent / "logs")
    return cfg


@pytest.fixture
def make_cfg(data_root: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """``compose_cfg`` with a temporary run dir (``tmp_path / "run"`` unless ``output_dir`` is given)."""

    def _make(*overrides: str, output_dir: Path | None = None, figures: bool = False) -> DictConfig:
        return compose_cfg(data_root, output_dir or tmp_path / "run", *overrides, figures=figures)

    yield _make
    GlobalHydra.instance().clear()


def run_cli(
    *args: str, cwd: Path | None = None, timeout: int = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m fmnist_lightning`` (or another module given as -m ...) as a user would; ``env`` adds
    variables."""
    cmd = [sys.executable, *args] if args and args[0] == "-m" else [sys.executable, "-m", "fmnist_lightning", *args]
    # Warnings are not silenced: the entry points filter the known-harmless ones themselves.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"} | {"HYDRA_FULL_ERROR": "0"} | (env or {})
    return subprocess.run(cmd, cwd=cwd or project_root(), capture_output=True, text=True, timeout=timeout, env=env)


def cli_overrides(data_root: Path, log_dir: Path, figures: bool = False) -> list[str]:
    return [*BASE_OVERRIDES, *([] if figures else NO_FIGURES), f"data.root={data_root}", f"paths.log_dir={log_dir}"]


__all__ = ["cli_overrides", "compose_cfg", "resolve_data_root", "run_cli", "write_dataset", "write_idx"]
