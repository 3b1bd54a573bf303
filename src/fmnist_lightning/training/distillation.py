"""Knowledge distillation (Hinton et al. 2015): a trained checkpoint's network teaches the run's own.

``distill.teacher=<file.ckpt>`` (off by default). The training loss of each batch becomes

    (1 - weight) * cross_entropy(student, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with the temperature ``T`` (``distill.temperature``) and ``weight`` (``distill.weight``). The teacher sees the
same batch as the student (augmented, mixed), in its own run's normalisation, in eval mode and without
gradients; it is never saved in the student's checkpoints. Validation and test use the student alone.

``distill.offline=true`` runs the teacher once, before the first step, over every training image as it is stored
(unaugmented), and keeps the mean of its logits for the image and its mirror image; each training batch then brings
its images' logits with it, and the teacher costs nothing per step. The price: the soft targets are the clean
image's, not the augmented view's (a shifted, flipped or erased view keeps its original's), and a batch cannot be
mixed (mix=none), since the teacher never saw the blend.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmnist_lightning.config.combinations import OFFLINE_NEEDS_TEACHER
from fmnist_lightning.data.datamodule import normalize
from fmnist_lightning.data.fashion_mnist import NORMALIZATION
from fmnist_lightning.errors import ConfigError


class Distillation:
    """The distillation loss, with its teacher loaded from ``teacher`` (a training checkpoint); ``teacher=None``
    turns it off. ``normalize``: the student's ``data.normalize``, to show the teacher images as its own run did."""

    def __init__(
        self,
        teacher: str | None = None,
        temperature: float = 4.0,
        weight: float = 0.5,
        normalize: str = "dataset",
        offline: bool = False,
    ) -> None:
        if not temperature > 0 or not 0 <= weight <= 1:
            raise ConfigError(
                f"need distill.temperature > 0 and 0 <= distill.weight <= 1 (got {temperature}, {weight})"
            )
        if normalize not in NORMALIZATION:
            raise ConfigError(f"unknown data.normalize={normalize!r}; choose one of: {', '.join(NORMALIZATION)}")
        if offline and teacher is None:
            raise ConfigError(OFFLINE_NEEDS_TEACHER)
        self.offline = bool(offline)
        self.temperature, self.weight = float(temperature), float(weight)
        self.student_norm = NORMALIZATION[normalize]
        self.teacher_path = teacher
        self.teacher: nn.Module | None = None
        self.teacher_norm = self.student_norm
        if teacher is not None:
            self._load(teacher)

    def __deepcopy__(self, memo: dict[int, Any]) -> Distillation:
        # EMA keeps a deep copy of the whole LightningModule, this object included. The teacher is frozen and
        # never averaged, so the copy shares it rather than holding a second one in memory.
        clone = copy.copy(self)
        memo[id(self)] = clone
        return clone

    @property
    def enabled(self) -> bool:
        return self.teacher is not None

    def _load(self, path: str) -> None:
        # Imported here: the checkpoint reader builds LightningModules, which take this object as an argument.
        from fmnist_lightning.training.checkpoint_files import restore_run

        run = restore_run(path, tta=False)
        self.teacher = run.module.net.eval().requires_grad_(False)
        self.teacher_norm = run.normalization

    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits for the student's (normalised) batch ``x``."""
        assert self.teacher is not None  # enabled
        self.teacher.to(x.device)
        (s_mean, s_std), (t_mean, t_std) = self.student_norm, self.teacher_norm
        with torch.no_grad():
            return self.teacher((x * s_std + s_mean - t_mean) / t_std).float()

    def soft_targets(self, images: Tensor, device: torch.device | str = "cpu", batch_size: int = 1024) -> Tensor:
        """``distill.offline``'s targets: for each of ``images`` (uint8 ``[N, C, H, W]``, as the data stores them),
        the mean of the teacher's logits for it and its mirror image, float32 ``[N, classes]`` on ``images``' device.
        Run under the caller's precision context (the Trainer's, so bf16 where the run trains in it)."""
        assert self.teacher is not None  # enabled
        self.teacher.to(device)
        mean, std = self.teacher_norm
        chunks = []
        with torch.no_grad():
            for chunk in images.split(batch_size):
                x = normalize(chunk.to(device), mean, std)
                chunks.append(((self.teacher(x).float() + self.teacher(x.flip(-1)).float()) / 2).to(images.device))
        return torch.cat(chunks)

    def loss(self, logits: Tensor, hard_loss: Tensor, teacher_logits: Tensor) -> Tensor:
        """The blended loss from the student's ``logits``, its loss on the labels, and the teacher's logits."""
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(logits.float() / t, dim=1),
            F.log_softmax(teacher_logits / t, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        return (1 - self.weight) * hard_loss + self.weight * t * t * soft

    def __call__(self, logits: Tensor, hard_loss: Tensor, x: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
        """The training loss of a batch ``x``: ``hard_loss`` (the student's on the labels), blended with the
        teacher's soft targets when there is a teacher: ``teacher_logits`` where the batch brought them
        (``offline``), else the teacher's logits for ``x`` now."""
        if not self.enabled:
            return hard_loss
        if teacher_logits is None:
            if self.offline:
                # The offline targets ride with the batch; without them the run would silently pay a teacher per step.
                raise RuntimeError("distill.offline: a training batch came without its teacher logits")
            teacher_logits = self.teacher_logits(x)
        return self.loss(logits, hard_loss, teacher_logits)

    def __repr__(self) -> str:
        return (
            f"Distillation(teacher={self.teacher_path!r}, temperature={self.temperature}, weight={self.weight}, "
            f"offline={self.offline})"
        )
