"""Facts about Fashion-MNIST images that any consumer of a model needs, importable without torch or Lightning."""

from __future__ import annotations

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 28

# (mean, std) applied after scaling to [0, 1]. "dataset" is the official training-set statistic.
NORMALIZATION = {"unit": (0.0, 1.0), "half": (0.5, 0.5), "dataset": (0.2860, 0.3530)}
