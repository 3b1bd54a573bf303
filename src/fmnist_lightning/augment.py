"""``python -m fmnist_lightning.augment aug=<preset> [out=<file.png>] [draws=N] [scale=N] [any override]``.

Also ``fmnist-augment``. Draws what an augmentation preset does to the training images, as one PNG grid: one
training image per class in the first column, augmented draws beside it, through the same transforms (either
data pipeline) as training. Written to ``outputs/augment/<time>/<preset>.png`` unless ``out=`` names a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fmnist_lightning.cli.commands import hydra_command, with_settings
from fmnist_lightning.config.checks import check_values, whole
from fmnist_lightning.config.output_dirs import refuse_foreign_file

# The preview's own keys, given on the command line as out=, draws=, scale= (no config group has them).
PREVIEW_KEYS = {"out": None, "draws": 7, "scale": 3}
# A text chunk in the PNGs this command writes, so that it replaces its own and keeps anybody else's.
PNG_MARK = ("Software", "fmnist-augment")
PREVIEW_CHECKS = (
    whole("draws", 1, "a number of augmented draws >= 1", "draws=7"),
    whole("scale", 1, "a whole upscaling factor >= 1", "scale=3"),
)
# Its own directories, beside runs/, and its own --help. A sweep over presets (``-m aug=flip,strong``) writes one
# grid per job; Hydra's no-op callback stands in for the training sweep's summary, which ranks jobs by a metric.
OWN_HYDRA_SETTINGS = {
    "hydra.run.dir": "${paths.log_dir}/augment/${now:%Y-%m-%d_%H-%M-%S_%f}",
    "hydra.sweep.dir": "${paths.log_dir}/augment/multirun/${now:%Y-%m-%d_%H-%M-%S_%f}",
    "hydra.callbacks.sweep_summary._target_": "hydra.experimental.callback.Callback",
    "hydra/help": "augment",
}


def preview(cfg: DictConfig) -> Path:
    """Write the preview grid of the composed config's augmentation; return the PNG's path."""
    import torch.nn.functional as F
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fmnist_lightning.training.builders import build

    own = {**PREVIEW_KEYS, **(cfg.get("preview") or {})}
    check_values(OmegaConf.create(own), PREVIEW_CHECKS)
    hydra = HydraConfig.get()
    aug_name = hydra.runtime.choices.get("aug", "custom")
    if own["out"]:
        out = sweep_file(Path(own["out"]), hydra.job.num if hydra.mode == RunMode.MULTIRUN else None)
    else:
        out = Path(hydra.runtime.output_dir) / f"{aug_name}.png"
    refuse_foreign_file(out, "out", is_marked_png, "a preview this command wrote", "grid.png")
    datamodule = build(cfg.data, "data", _recursive_=True)
    datamodule.prepare_data()
    datamodule.try_transforms()
    grid = datamodule.preview(n_draws=int(own["draws"]))
    # Nearest-neighbour upscaling keeps 28x28 pixels crisp in an image viewer.
    grid = F.interpolate(grid[None], scale_factor=int(own["scale"]), mode="nearest")[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_marked_png(grid, out)
    mix = HydraConfig.get().runtime.choices.get("mix", "none")
    print(
        f"wrote {out} (aug={aug_name}, mix={mix}, pipeline={cfg.data.pipeline}): originals left, augmented draws right"
    )
    return out


def is_marked_png(path: Path) -> bool:
    """Whether ``path`` is a PNG this command wrote (its text chunk)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return bool(image.info.get(PNG_MARK[0]) == PNG_MARK[1])
    except (OSError, SyntaxError, ValueError):  # not an image Pillow reads: not ours either
        return False


def save_marked_png(grid: Any, out: Path) -> None:
    """``grid`` ([3, H, W] in [0, 1]) as torchvision's save_image writes it, with the text chunk that marks it ours."""
    import torch
    from PIL import Image, PngImagePlugin

    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", dtype=torch.uint8).numpy()
    info = PngImagePlugin.PngInfo()
    info.add_text(*PNG_MARK)
    Image.fromarray(pixels).save(out, format="PNG", pnginfo=info)


def sweep_file(out: Path, job: int | None) -> Path:
    """``out=`` as given, or in a sweep with the job's number before its suffix: each job's grid its own file."""
    return out if job is None else out.with_name(f"{out.stem}_{job}{out.suffix}")


def preview_arguments(args: list[str]) -> list[str]:
    """``out=``, ``draws=`` and ``scale=`` as keys of the config's ``preview`` node, and the command's own
    output directory and help."""
    own = [f"+preview.{a}" if a.partition("=")[0] in PREVIEW_KEYS else a for a in args]
    return with_settings(OWN_HYDRA_SETTINGS)(own)


cli = hydra_command("config", preview, arguments=preview_arguments)


if __name__ == "__main__":
    cli()
