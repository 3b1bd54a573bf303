"""``python -m fmnist_lightning.augment aug=<preset> [out=<file.png>] [draws=N] [scale=N] [any override]``.

Draws what an augmentation preset does to the training images, as one PNG grid: one training
image per class in the first column, augmented draws beside it, through the same transforms
(either data pipeline) as training.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchvision.utils import save_image

from fmnist_lightning.cli.hydra_entry import run_hydra
from fmnist_lightning.config.files import CONF_DIR
from fmnist_lightning.config.hydra_compat import ALLOWED, INIT_ARGS

OWN_KEYS = ("out", "draws", "scale")


def main(argv: Sequence[str] | None = None) -> Path:
    """Write the preview grid of the composed config's augmentation; return the PNG's path."""
    args = list(sys.argv[1:] if argv is None else argv)
    own = {k: v for k, _, v in (a.partition("=") for a in args) if k in OWN_KEYS}
    overrides = [a for a in args if a.partition("=")[0] not in own]
    with initialize_config_dir(config_dir=str(CONF_DIR), **INIT_ARGS):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    aug_name = cfg.hydra.runtime.choices.get("aug", "custom")
    out = Path(own.get("out") or Path(cfg.paths.log_dir) / "augment" / f"{aug_name}.png")
    datamodule = instantiate(cfg.data, **ALLOWED)
    datamodule.prepare_data()
    grid = datamodule.preview(n_draws=int(own.get("draws", 7)))
    scale = int(own.get("scale", 3))
    # Nearest-neighbour upscaling keeps 28x28 pixels crisp in an image viewer.
    grid = F.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out)
    print(f"wrote {out} (aug={aug_name}, pipeline={cfg.data.pipeline}): originals left, augmented draws right")
    return out


def cli() -> None:
    """Entry point: ``--help`` prints this module's usage; any failure ends as one ``error:`` line."""
    args = sys.argv[1:]
    if any(arg in ("-h", "--help") for arg in args):
        print(__doc__.strip())
        return
    run_hydra(lambda: main(args))


if __name__ == "__main__":
    cli()
