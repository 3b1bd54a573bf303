"""Initialisation from the data and from identity (``init=whiten|dirac|whiten_dirac``), as airbench does.

- Whitening: the first convolution's filters become the eigenvectors of the training images' patch
  covariance, each scaled by ``1/sqrt(eigenvalue + eps)``, with their negatives beside them (so a
  ReLU after it keeps both signs): its outputs start decorrelated and of unit variance. Computed
  once from ``images`` training images as the model sees them (normalised, not augmented).
- Dirac: every later convolution (odd kernel, no groups) starts as the identity on its first
  ``in_channels`` filters (``torch.nn.init.dirac_``), the rest as before: a deep stack starts close to
  a shallow one.

Applied in ``setup``, before a resumed run restores its checkpoint (which then wins), and only to
a plain ``nn.Conv2d``: the backbone itself knows nothing of it.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from fmnist_lightning.data.datamodule import normalize

log = logging.getLogger(__name__)


def image_patches(images: Tensor, kernel: tuple[int, int]) -> Tensor:
    """Every ``kernel``-sized patch of ``images`` ([N, C, H, W]) as rows ``[N * positions, C * kh * kw]``."""
    kh, kw = kernel
    patches = images.unfold(2, kh, 1).unfold(3, kw, 1)  # N, C, H', W', kh, kw
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.shape[1] * kh * kw).double()


def whitening_filters(images: Tensor, kernel: tuple[int, int], eps: float = 5e-4) -> Tensor:
    """``[2 * C * kh * kw, C, kh, kw]``: the whitening filters then their negatives, largest eigenvalue first."""
    # Summed over chunks: all 5,000 images' patches at once would be ~250 MB of float64 for one matmul.
    covariance: Tensor | float = 0.0
    count = 0
    for chunk in images.split(500):
        patches = image_patches(chunk, kernel)
        covariance = covariance + patches.T @ patches
        count += patches.shape[0]
    covariance = covariance / count
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    order = eigenvalues.argsort(descending=True)
    filters = eigenvectors[:, order].T / (eigenvalues[order] + eps).sqrt()[:, None]
    filters = filters.reshape(-1, images.shape[1], *kernel).float()
    return torch.cat([filters, -filters])


def convolutions(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def whiten_first_conv(net: nn.Module, images: Tensor, eps: float = 5e-4) -> int:
    """Set the first convolution's filters to whitening ones (as many as it has, largest first); returns how many."""
    first = convolutions(net)[0]
    kh, kw = first.kernel_size[0], first.kernel_size[-1]
    filters = whitening_filters(images, (kh, kw), eps)
    n = min(first.out_channels, filters.shape[0])
    with torch.no_grad():
        first.weight[:n] = filters[:n].to(first.weight.dtype)
        if first.bias is not None:
            first.bias[:n].zero_()
    return n


def dirac_later_convs(net: nn.Module) -> int:
    """Identity-initialise the first ``in_channels`` filters of every convolution after the first; returns how many."""
    done = 0
    for conv in convolutions(net)[1:]:
        if conv.groups != 1 or any(k % 2 == 0 for k in conv.kernel_size):
            continue
        with torch.no_grad():
            nn.init.dirac_(conv.weight[: min(conv.in_channels, conv.out_channels)])
        done += 1
    return done


class DataInit(L.Callback):
    """``whiten`` the first convolution from the training split and/or ``dirac`` the later ones."""

    def __init__(self, whiten: bool = False, dirac: bool = False, images: int = 5000, eps: float = 5e-4) -> None:
        self.whiten, self.dirac, self.images, self.eps = whiten, dirac, images, eps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        net = getattr(pl_module, "net", pl_module)
        if not convolutions(net):
            log.warning("init: the model has no convolution; nothing to initialise")
            return
        # A backbone of several networks (models.ensemble) lists them as `members`: each has a first convolution.
        networks = list(getattr(net, "members", None) or [net])
        if self.whiten:
            dm: Any = getattr(trainer, "datamodule", None)  # the run's FashionMNISTDataModule
            # The same draw on every rank (the split is seeded), so DDP ranks start alike.
            images = normalize(dm.train_set.images[: self.images].cpu(), dm.mean, dm.std)
            n = sum(whiten_first_conv(network, images, self.eps) for network in networks)
            each = f" of each of {len(networks)} networks" if len(networks) > 1 else ""
            log.info(
                "init: %d whitening filters in the first convolution%s, from %d training images", n, each, len(images)
            )
        if self.dirac:
            n = sum(dirac_later_convs(network) for network in networks)
            log.info("init: %d later convolutions start as the identity", n)
