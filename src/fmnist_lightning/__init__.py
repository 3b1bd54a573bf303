"""Config-driven Fashion-MNIST experiments with PyTorch Lightning and Hydra."""

from fmnist_lightning.cli.known_warnings import filter_known_warnings

# Every entry point (train, evaluate, predict, ...) imports the package first, so this runs before
# Lightning or torch can emit any of them.
filter_known_warnings()

__version__ = "0.2.0"
