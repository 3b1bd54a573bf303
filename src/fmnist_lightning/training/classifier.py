"""``ImageClassifier``: one LightningModule for any backbone.

It owns the loss, the metrics and the optimizer/scheduler wiring; which network it
trains, and with which optimizer, comes from the config.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from fmnist_lightning.config.combinations import ENSEMBLE_AND_DISTILL
from fmnist_lightning.errors import ConfigError
from fmnist_lightning.training.param_groups import apply_lr_scales, group_max_lr, param_groups, splits_groups
from fmnist_lightning.training.schedule_length import schedule_length
from fmnist_lightning.training.tta import tta_views

SCHEDULER_INTERVALS = ("epoch", "step")
# Scheduler state that follows the run's length (OneCycleLR's plan, CosineAnnealingLR's T_max). When a run
# is resumed with another length, the freshly planned values replace the stored ones; only the position
# (the step or epoch count) is restored.
RUN_LENGTH_STATE = ("total_steps", "_schedule_phases", "T_max")
# The learning rate's tag in TensorBoard and metrics.csv, whatever the optimizer, so runs share a chart
# (the scheduler's name here; callbacks.lr_tag.LearningRateTag when there is no scheduler).
LR_TAG = "lr"

log = logging.getLogger(__name__)


def fill_missing_accumulators(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Let checkpoints written before the epoch sums were saved load: the missing sums start empty."""
    for key, value in module.state_dict().items():
        if key.startswith(("train_acc.", "train_loss.")):
            state_dict.setdefault(key, value)


def hard_labels(y: Tensor) -> Tensor:
    """Mixed labels (mix=mixup|cutmix) are class probabilities, which the loss takes as they are; the training
    accuracy counts the class each mixed image holds most of."""
    return y.argmax(1) if y.is_floating_point() else y


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str = "val/loss",
        label_smoothing: float = 0.0,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (1, 28, 28),
        tta: bool = False,
        tta_shift: int = 0,
        param_groups: dict[str, Any] | None = None,
        distill: Callable[..., Tensor] | None = None,
    ) -> None:
        super().__init__()
        if scheduler_interval not in SCHEDULER_INTERVALS:
            raise ValueError(f"scheduler_interval must be one of {SCHEDULER_INTERVALS}, got {scheduler_interval!r}")
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # distill.teacher=<ckpt>: (logits, loss on the labels, images[, the teacher's logits]) -> the training loss
        # (training.distillation).
        self.distill = distill
        # Test-time augmentation in test_step and predict_step only (module.tta, or evaluate/predict's tta=):
        # validation stays plain, so the checkpoint is chosen on the same footing in every run.
        self.tta, self.tta_shift = tta, tta_shift
        # Weight decay and learning-rate scale by kind of parameter (training.param_groups); left at their
        # defaults, one group as before (so the optimizer state of older checkpoints still fits).
        self.param_groups = dict(param_groups) if param_groups and splits_groups(**param_groups) else None
        # Lets the model summary show each layer's output shape.
        self.example_input_array = torch.zeros(1, *image_shape)

        # One metric object per stage: torchmetrics accumulates over the whole epoch
        # (exact accuracy, not an average of batch averages) and syncs across processes.
        # validate_args=False: inputs are our own logits and int64 labels (checked when the data
        # is loaded); the per-update value checks cost more than the accuracy itself.
        metric_args: dict[str, Any] = {"num_classes": num_classes, "validate_args": False}
        self.train_acc = MulticlassAccuracy(average="micro", **metric_args)
        # nan_strategy="disable": a NaN loss must show in the epoch mean, not be dropped with a warning.
        self.train_loss = MeanMetric(nan_strategy="disable")
        # The epoch's running sums travel in checkpoints, so an epoch resumed mid-way reports the same
        # train/loss and train/acc as one that was never interrupted (they are reset at each epoch start).
        for metric in self.epoch_accumulators():
            metric.persistent(True)
        self.val_acc = MulticlassAccuracy(average="micro", **metric_args)
        self.test_acc = MulticlassAccuracy(average="micro", **metric_args)
        self.test_f1 = MulticlassF1Score(average="macro", **metric_args)
        # Confusion matrices for the figures and reports (read by results.tensorboard_figures.EvaluationFigures); their
        # compute() syncs over processes like the metrics above.
        self.val_confmat = MulticlassConfusionMatrix(**metric_args)
        self.test_confmat = MulticlassConfusionMatrix(**metric_args)
        self.val_acc_best = MaxMetric()
        # Kept in checkpoints so a resumed run remembers its best validation accuracy.
        self.val_acc_best.persistent(True)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        x, y = batch[0], batch[1]
        logits = self(x)
        return self.criterion(logits, y), logits, y

    def epoch_accumulators(self) -> tuple[Metric, ...]:
        return (self.train_acc, self.train_loss)

    def on_train_epoch_start(self) -> None:
        # Not called again when a checkpoint resumes mid-epoch: the restored sums go on accumulating.
        for metric in self.epoch_accumulators():
            metric.reset()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        fill_missing_accumulators(self, checkpoint["state_dict"])
        # Read by configure_optimizers, which the Trainer calls before it restores the schedulers from this dict.
        self._resumed_schedulers = checkpoint.get("lr_schedulers") or []

    def _replan(self, scheduler: Any) -> None:
        """On resume with another run length, keep the new plan and restore only the scheduler's position."""
        stored = next(iter(getattr(self, "_resumed_schedulers", [])), None)
        if not isinstance(stored, dict):
            return
        fresh = vars(scheduler)
        changed = [k for k in RUN_LENGTH_STATE if k in stored and k in fresh and stored[k] != fresh[k]]
        if not changed:
            return
        key = changed[0]
        was = stored[key]
        for name in RUN_LENGTH_STATE:
            stored.pop(name, None)
        log.warning(
            "Resuming with another run length: %s is re-planned with %s=%s (was %s) and continues from its step %s",
            type(scheduler).__name__,
            key,
            fresh[key],
            was,
            stored.get("last_epoch", 0),
        )
        self._closed_form_pending = True

    def on_train_start(self) -> None:
        scheduler = self.lr_schedulers()
        if not getattr(self, "_closed_form_pending", False) or scheduler is None:
            return
        self._closed_form_pending = False
        # Recursive schedules (cosine) would carry the old plan's current lr on; set the new plan's value.
        if hasattr(scheduler, "_get_closed_form_lr") and not isinstance(scheduler, list):
            for group, lr in zip(scheduler.optimizer.param_groups, scheduler._get_closed_form_lr(), strict=True):
                group["lr"] = lr

    def on_fit_start(self) -> None:
        # distill.offline: the teacher runs once, here, where the Trainer has put this module on its device and set
        # its precision; each training batch then brings its images' logits along (a third element).
        soft_targets = getattr(self.distill, "soft_targets", None)
        if soft_targets is None or not getattr(self.distill, "offline", False):
            return
        serve = getattr(getattr(self.trainer, "datamodule", None), "serve_train_targets", None)
        if serve is None:
            raise ConfigError("distill.offline=true needs the project's data module (it serves the teacher's logits)")
        started = time.perf_counter()
        with self.trainer.precision_plugin.forward_context():
            targets = serve(lambda images: soft_targets(images, self.device))
        log.info(
            "distill: the teacher's logits for %d training images (and their mirror images), once, in %.1f s",
            len(targets),
            time.perf_counter() - started,
        )

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        if logits.dim() == 3:
            return self._members_step(logits, y)
        loss = self.criterion(logits, y)
        if self.distill is not None:
            # batch[2:]: the teacher's logits for these images, where distill.offline computed them up front.
            loss = self.distill(logits, loss, batch[0], *batch[2:])
        # Metrics only accumulate here and are logged once per epoch (on_train_epoch_end): a self.log
        # call per step costs Lightning's bookkeeping every step, a measurable share of a small CNN's step.
        self.train_loss.update(loss.detach(), weight=y.shape[0])
        self.train_acc.update(logits, hard_labels(y))
        return loss

    def _members_step(self, logits: Tensor, y: Tensor) -> Tensor:
        """``[members, batch, classes]`` logits: a backbone of several networks in training (models.ensemble)."""
        if getattr(self.distill, "enabled", self.distill is not None):
            raise ConfigError(ENSEMBLE_AND_DISTILL)  # checked before the run too, where the config is at hand
        # Each member learns from the labels as if trained alone: their losses are summed, not averaged, so each
        # one's gradient is the one its own run would give. The logged loss is the members' mean, a single
        # network's scale; the accuracy is the ensemble's (its averaged probabilities).
        losses = torch.stack([self.criterion(member, y) for member in logits])
        self.train_loss.update(losses.detach().mean(), weight=y.shape[0])
        self.train_acc.update(logits.detach().softmax(dim=-1).mean(dim=0), hard_labels(y))
        return losses.sum()

    def on_train_epoch_end(self) -> None:
        # Logging the metric objects lets Lightning compute, sync across processes and reset them.
        self.log("train/loss", self.train_loss, prog_bar=True)
        self.log("train/acc", self.train_acc, prog_bar=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, y = self._step(batch)
        self.val_acc.update(logits, y)
        self.val_confmat.update(logits, y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_start(self) -> None:
        # The matrices are not logged with self.log, so Lightning does not reset them. Resetting at the
        # start rather than the end leaves the finished epoch's matrix readable by callbacks at
        # on_validation_end and after trainer.test returns.
        self.val_confmat.reset()

    def on_test_epoch_start(self) -> None:
        self.test_confmat.reset()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return  # a couple of batches from an untrained model are not a validation result
        self.val_acc_best.update(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        # With TTA the log of the averaged probabilities stands in for logits: same argmax, and the
        # cross-entropy of log-probabilities is the loss of the averaged prediction (clamped: a
        # probability that underflowed to 0 would make the loss infinite).
        logits = self.predict_proba(x).clamp_min(torch.finfo(x.dtype).tiny).log() if self.tta else self(x)
        loss = self.criterion(logits, y)
        self.test_acc.update(logits, y)
        self.test_confmat.update(logits, y)
        self.test_f1.update(logits, y)
        self.log("test/loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        self.log("test/acc", self.test_acc, on_step=False, on_epoch=True)
        self.log("test/f1_macro", self.test_f1, on_step=False, on_epoch=True)

    def predict_step(self, batch: tuple[Tensor, Tensor] | Tensor, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predict_proba(x)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities ``[B, classes]``; with ``tta``, averaged over the image and its mirror image
        (and, with ``tta_shift``, both translated: training.tta)."""
        if not self.tta:
            return self(x).softmax(dim=-1)
        # A garment mirrored left-right is still the same garment; only a model trained with flips
        # has seen mirrored ones (Fashion-MNIST's shoes all face the same way).
        views = tta_views(x, self.tta_shift)
        return torch.stack([self(view).softmax(dim=-1) for view in views]).mean(dim=0)

    def configure_optimizers(self) -> Any:
        return self.optimization(lambda: self.trainer.estimated_stepping_batches)

    def optimization(self, run_steps: Callable[[], float] | None = None) -> Any:
        """The optimizer and scheduler from the config, in Lightning's ``configure_optimizers`` form, for a run
        of ``run_steps()`` optimizer steps (None: a check before the run; see ``training.schedule_length``)."""
        if self.param_groups:
            optimizer = self.optimizer_factory(params=param_groups(self, **self.param_groups))
            apply_lr_scales(optimizer)
        else:
            optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        extra: dict[str, Any] = schedule_length(self.scheduler_factory, self.scheduler_interval, run_steps)
        max_lr = getattr(self.scheduler_factory, "keywords", {}).get("max_lr")
        if max_lr is not None:
            # OneCycleLR sets every group's rate itself: groups with rates of their own keep their ratios.
            base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
            extra["max_lr"] = group_max_lr(max_lr, optimizer, base_lr)
        scheduler = self.scheduler_factory(optimizer=optimizer, **extra)
        self._replan(scheduler)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": self.scheduler_interval,
                "monitor": self.scheduler_monitor,
                "name": LR_TAG,
            },
        }
