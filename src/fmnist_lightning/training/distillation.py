"""Knowledge distillation (Hinton et al. 2015): a trained checkpoint's network teaches the run's own.

``distill.teacher=<file.ckpt>`` (off by default). The training loss of each batch becomes

    (1 - weight) * cross_entropy(student, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))

with the temperature ``T`` (``distill.temperature``) and ``weight`` (``distill.weight``). The teacher sees the
same batch as the student (augmented, mixed), in its own run's normalisation, in eval mode and without
gradients; it is never saved in the student's checkpoints. Validation and test use the student alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmnist_lightning.data.fashion_mnist import NORMALIZATION
from fmnist_lightning.errors import ConfigError


class Distillation:
    """The distillation loss, with its teacher loaded from ``teacher`` (a training checkpoint); ``teacher=None``
    turns it off. ``normalize``: the student's ``data.normalize``, to show the teacher images as its own run did."""

    def __init__(
        self, teacher: str | None = None, temperature: float = 4.0, weight: float = 0.5, normalize: str = "dataset"
    ) -> None:
        if not temperature > 0 or not 0 <= weight <= 1:
            raise ConfigError(
                f"need distill.temperature > 0 and 0 <= distill.weight <= 1 (got {temperature}, {weight})"
            )
        if normalize not in NORMALIZATION:
            raise ConfigError(f"unknown data.normalize={normalize!r}; choose one of: {', '.join(NORMALIZATION)}")
        self.temperature, self.weight = float(temperature), float(weight)
        self.student_norm = NORMALIZATION[normalize]
        self.teacher_path = teacher
        self.teacher: nn.Module | None = None
        self.teacher_norm = self.student_norm
        if teacher is not None:
            self._load(teacher)

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

    def __call__(self, logits: Tensor, hard_loss: Tensor, x: Tensor) -> Tensor:
        """The training loss of a batch ``x``: ``hard_loss`` (the student's on the labels), blended with the
        teacher's soft targets when there is a teacher."""
        return self.loss(logits, hard_loss, self.teacher_logits(x)) if self.enabled else hard_loss

    def __repr__(self) -> str:
        return f"Distillation(teacher={self.teacher_path!r}, temperature={self.temperature}, weight={self.weight})"
