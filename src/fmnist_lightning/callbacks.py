"""Lightning callbacks that record a run: its config inside checkpoints, hparams and result figures for TensorBoard."""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch import Tensor
from torch.utils.tensorboard.summary import hparams

from fmnist_lightning.config import hparams_from_record, job_hparam_names
from hydra_plugins.fmnist_optuna_sweeper import TRIAL_ENV
from fmnist_lightning.errors import ConfigError, TrainingError
from fmnist_lightning.evaluation import per_class_accuracy
from fmnist_lightning.plots import confusion_matrix_figure, per_class_accuracy_figure, prediction_grid_figure

CONFIG_KEY = "fmnist_config"
LAST_CHECKPOINT_NAME = "last"
# The learning rate's tag in TensorBoard and metrics.csv, whatever the optimizer.
LR_TAG = "lr"


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The ModelCheckpoint that keeps the best model (``callbacks.model_checkpoint``), not the one keeping last.ckpt."""
    kept = [cb for cb in trainer.checkpoint_callbacks if cb.filename != LAST_CHECKPOINT_NAME]
    return kept[0] if kept else None


class RunRecord(L.Callback):
    """Stores the run's resolved config in every checkpoint and logs hparams once at fit start.

    The config in the checkpoint is what evaluate, predict and resume rebuild the
    model from, so a checkpoint needs no separate YAML. The hparams summary names
    the metrics that compare runs; TensorBoard reads their values from the
    scalars the run logs, so no placeholder values are written.
    """

    def __init__(self, hparam_metrics: Sequence[str] = (), config: dict[str, Any] | None = None) -> None:
        self.config = config or {}
        self.hparam_metrics = list(hparam_metrics)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CONFIG_KEY] = self.config

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = hparams_from_record(self.config)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # What TensorBoardLogger.log_hyperparams does, minus logging metric values at step 0,
                # which would put a false first point on the val/acc_best and test/acc curves.
                writer = logger.experiment._get_file_writer()
                experiment, *session = hparams(params, dict.fromkeys(self.hparam_metrics, 0.0))
                writer.add_summary(flag_as_differing(experiment, job_hparam_names(self.config)))
                for summary in session:
                    writer.add_summary(summary)
            else:
                logger.log_hyperparams(params)


def flag_as_differing(experiment: Summary, names: Collection[str]) -> Summary:
    """The hparams experiment summary with ``names`` flagged as differing between runs.

    TensorBoard's HPARAMS table lists flagged hparams first and the rest by name, whatever order
    they were logged in (torch flags none, so ``choice/*`` columns came first and ``optim/lr``
    among the last); flagging the job's own overrides opens the table on what a sweep varied.
    """
    value = experiment.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    value.metadata.plugin_data.content = data.SerializeToString()
    return experiment


class AugmentationPreview(L.Callback):
    """Logs a grid of training images and their augmented draws to TensorBoard when training starts."""

    def __init__(self, n_draws: int = 7) -> None:
        self.n_draws = n_draws

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers or not hasattr(datamodule, "preview"):
            return
        grid = datamodule.preview(n_draws=self.n_draws)
        for logger in loggers:
            logger.experiment.add_image("augmentation/preview", grid, global_step=trainer.global_step)


class EvaluationFigures(L.Callback):
    """TensorBoard figures with class names: confusion matrices, per-class accuracy, sample test predictions.

    Validation figures are logged whenever ``val/acc_best`` improves, so the last ones
    logged belong to the best epoch; test figures when testing ends. The matrices come
    from the module's torchmetrics ``val_confmat``/``test_confmat``, whose ``compute()``
    syncs over processes and so runs on every rank; only rank zero draws.
    """

    def __init__(self, n_samples: int = 32, monitor: str = "val/acc_best") -> None:
        self.n_samples = n_samples
        self.monitor = monitor
        self.best: float | None = None
        self.samples: tuple[Tensor, Tensor, Tensor] | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "val_confmat"):
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or (self.best is not None and float(value) <= self.best):
            return
        self.best = float(value)
        self._log_matrix(trainer, "val", pl_module.val_confmat.compute())

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or self.n_samples <= 0:
            return
        # The first test batch, predicted again by the module as it tests (TTA included).
        images, labels = batch[0][: self.n_samples], batch[1][: self.n_samples]
        self.samples = (images.cpu(), labels.cpu(), pl_module.predict_proba(images).cpu())

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not hasattr(pl_module, "test_confmat"):
            return
        self._log_matrix(trainer, "test", pl_module.test_confmat.compute())
        if self.samples is not None:
            self._log_samples(trainer, *self.samples)

    @staticmethod
    def _tensorboards(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    @rank_zero_only
    def _log_matrix(self, trainer: L.Trainer, stage: str, confmat: Tensor) -> None:
        where = "validation" if stage == "val" else "test"
        epoch = f", epoch {trainer.current_epoch + 1}" if stage == "val" else ""
        for logger in self._tensorboards(trainer):
            figures = {
                f"{stage}/confusion_matrix": confusion_matrix_figure(confmat, True, f"Confusion matrix, {where}{epoch}"),
                f"{stage}/per_class_accuracy": per_class_accuracy_figure(
                    per_class_accuracy(confmat), f"Per-class accuracy, {where}{epoch}"
                ),
            }
            for tag, figure in figures.items():
                logger.experiment.add_figure(tag, figure, global_step=trainer.global_step)

    @rank_zero_only
    def _log_samples(self, trainer: L.Trainer, images: Tensor, labels: Tensor, probs: Tensor) -> None:
        for logger in self._tensorboards(trainer):
            figure = prediction_grid_figure(images, labels, probs, title="Sample test predictions (mistakes in red)")
            logger.experiment.add_figure("test/predictions", figure, global_step=trainer.global_step)


class FiniteLossGuard(L.Callback):
    """Stops training with one clear line once the training loss is NaN or infinite.

    Checked every ``check_every_n_steps`` steps rather than every step: reading the loss
    is a device sync on a GPU, and a non-finite loss poisons the weights, so it stays
    non-finite and is caught at the next check.
    """

    def __init__(self, check_every_n_steps: int = 20) -> None:
        if check_every_n_steps < 1:
            raise ConfigError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.every = check_every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx % self.every:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and not torch.isfinite(loss).all():
            lrs = sorted({group["lr"] for opt in trainer.optimizers for group in opt.param_groups})
            raise TrainingError(
                f"the training loss became {float(loss)} at epoch {trainer.current_epoch}, step {trainer.global_step} "
                f"(learning rate {', '.join(f'{lr:g}' for lr in lrs)}); try a lower learning rate, e.g. optim.lr={lrs[-1] / 10:g}"
            )


class RngState(L.Callback):
    """Saves torch's random state in checkpoints and restores it when a resumed fit starts training.

    Augmentation draws and dropout come from torch's global generator (the batch
    order does not: see ``data.EpochShuffle``), so a run resumed from an end-of-epoch
    checkpoint makes the same draws as an uninterrupted one and, with
    ``trainer.deterministic=true``, ends identical. The state is applied at
    ``on_train_start``, after the fit-start callbacks (which draw an augmentation
    preview) and right before the first resumed batch.
    """

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is None:
            return
        torch.set_rng_state(self.pending["torch"])
        if "cuda" in self.pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.pending["cuda"])
        self.pending = None


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C or SIGTERM, saves ``last.ckpt`` and says how to resume.

    Lightning turns SIGTERM into ``SIGTERMException`` after the current batch and
    Ctrl-C into ``KeyboardInterrupt``; both reach ``on_exception``. Other exceptions
    (bugs, bad input, a NaN loss) save nothing: their state is not worth resuming.
    The file is written by the Trainer's checkpoint IO, which saves atomically.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, (KeyboardInterrupt, SIGTERMException)) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path)
        run_dir = self.path.parent.parent
        rank_zero_only(print)(
            f"Interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path}. "
            f"Resume with: python -m fmnist_lightning resume={run_dir}",
            file=sys.stderr,
            flush=True,
        )


def threshold_key(threshold: float) -> str:
    """``0.9`` -> ``"0.90"``, ``0.9033`` -> ``"0.9033"``: two decimals, more where the threshold has them."""
    key = f"{threshold:.2f}"
    return key if float(key) == threshold else f"{threshold:g}"


class RunClock(L.Callback):
    """The run's wall time summed over its invocations, and when ``val/acc`` first reached each threshold.

    The elapsed time travels in checkpoints, so a resumed run reports the time of the
    whole run (time spent after the last checkpoint of a killed invocation is lost
    with it). Each threshold's first crossing is recorded once, with the wall time and
    the (1-based) epoch, logged to the loggers as ``time_to_acc/<t>`` (seconds) and
    ``epoch_to_acc/<t>``, and returned by ``metrics()`` for ``metrics.json``.
    """

    def __init__(self, thresholds: Sequence[float] = (0.90, 0.92, 0.93, 0.94), monitor: str = "val/acc") -> None:
        self.thresholds = sorted(float(t) for t in thresholds)
        self.monitor = monitor
        self.started = time.perf_counter()
        self.previous_s = 0.0
        self.reached: dict[str, dict[str, float]] = {}

    def elapsed(self) -> float:
        return self.previous_s + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed_s": self.elapsed(), "reached": self.reached}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied when fitting starts: testing a checkpoint (trainer.test(ckpt_path=...)) restores callback
        # states too, and must not add that checkpoint's time to this run's.
        self.pending = state_dict

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self.pending = getattr(self, "pending", None), None
        if state is not None:
            # This invocation's own time so far (setup, loading) is counted on top of the restored total.
            self.previous_s = float(state["elapsed_s"])
            self.reached = dict(state.get("reached", {}))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None:
            return
        new = {}
        for threshold in self.thresholds:
            key = threshold_key(threshold)
            if key not in self.reached and float(value) >= threshold:
                self.reached[key] = {"time_s": round(self.elapsed(), 2), "epoch": trainer.current_epoch + 1}
                new[f"time_to_acc/{key}"] = self.reached[key]["time_s"]
                new[f"epoch_to_acc/{key}"] = self.reached[key]["epoch"]
        if new and not trainer.fast_dev_run:
            for logger in trainer.loggers:
                logger.log_metrics(new, step=trainer.global_step)

    def metrics(self) -> dict[str, float]:
        """Flat keys for ``metrics.json``: the crossing time and epoch of every threshold reached."""
        out: dict[str, float] = {}
        for key, hit in sorted(self.reached.items()):
            out[f"time_to_acc/{key}"] = hit["time_s"]
            out[f"epoch_to_acc/{key}"] = hit["epoch"]
        return out


class OptunaPruning(L.Callback):
    """Reports ``monitor`` to this job's Optuna trial at every validation and stops training if the pruner says so.

    Active only in a trial of ``hydra/sweeper=optuna``, whose sweeper names the storage, study
    and trial in environment variables (set through ``hydra.job.env_set``, so any launcher
    passes them on). A pruned run stops like a finished one: it tests its best checkpoint and
    writes its metrics, with ``pruned_at_epoch``; the sweeper then tells the study PRUNED.
    Unlike optuna-integration's callback, it does not raise ``TrialPruned``, which would end the
    run as a failure without its results.
    """

    def __init__(self, monitor: str = "val/acc_best") -> None:
        self.monitor = monitor
        self.trial: Any = None
        self.pruned_at_epoch: int | None = None

    def connect(self, trial_env: dict[str, str] | None = None) -> None:
        """Find this job's trial, if the sweeper started it as one."""
        import os

        from hydra.core.hydra_config import HydraConfig

        env = trial_env or {key: os.environ.get(name, "") for key, name in TRIAL_ENV.items()}
        if not all(env.values()):
            return
        import optuna
        from hydra.utils import instantiate

        pruner_cfg = HydraConfig.get().sweeper.get("pruner") if HydraConfig.initialized() else None
        pruner = instantiate(pruner_cfg) if pruner_cfg else None
        study = optuna.load_study(study_name=env["study"], storage=env["storage"], pruner=pruner)
        self.trial = optuna.trial.Trial(study, int(env["trial"]))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.trial is None and trainer.is_global_zero:
            self.connect()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if self.trial is None or trainer.sanity_checking or value is None:
            return
        epoch = trainer.current_epoch + 1
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_at_epoch = epoch
            trainer.should_stop = True
            rank_zero_only(print)(f"Optuna trial {self.trial.number} pruned after epoch {epoch} "
                                  f"({self.monitor} {float(value):.4f})", flush=True)


class LearningRateTag(LearningRateMonitor):
    """Lightning's LearningRateMonitor, logging a single optimizer's learning rate as ``lr``.

    Lightning names the tag after the optimizer class when no scheduler names it (``lr-SGD``,
    ``lr-AdamW``), so runs with different optimizers land on different TensorBoard charts.
    (With a scheduler, ``ImageClassifier`` names it ``lr`` in its scheduler config.)
    """

    def _find_names_from_optimizers(self, optimizers: list[Any], *args: Any, **kwargs: Any) -> tuple[list[list[str]], list[Any]]:
        names, found = super()._find_names_from_optimizers(optimizers, *args, **kwargs)
        if len(names) == 1 and len(names[0]) == 1:
            names = [[LR_TAG]]
        return names, found


class EMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, with the stored average kept when a checkpoint is tested.

    Lightning validates with the averaged weights, saves them as the checkpoint's ``state_dict`` (the raw
    weights go to ``current_model_state``, to resume from) and copies them into the module when training
    ends. But ``trainer.test(ckpt_path=...)`` after ``fit`` also calls this callback's
    ``on_load_checkpoint``, whose parent then loads the raw weights over the average: the best checkpoint
    would be tested with weights other than those it was chosen by. Outside fitting, the ``state_dict``
    the Trainer has just loaded (the average) is what is evaluated.
    """

    def __init__(self, decay: float = 0.999, **kwargs: Any) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay must be between 0 and 1 (exclusive), got {decay}")
        super().__init__(decay=decay, **kwargs)
        self.decay = decay

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)

    # During validation the parent swaps the average into the module and the raw weights into its
    # AveragedModel. A checkpoint saved then (Ctrl-C or SIGTERM mid-validation: InterruptCheckpoint)
    # would get the two the wrong way round, and resume would train on from the average.
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_start(trainer, pl_module)
        self.swapped = self._average_model is not None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)
        self.swapped = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if getattr(self, "swapped", False) and "current_model_state" in checkpoint:
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"], checkpoint["state_dict"])
