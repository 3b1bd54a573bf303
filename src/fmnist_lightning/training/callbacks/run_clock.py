"""The run's wall time over all its invocations, and when the validation accuracy first reached each threshold."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import lightning as L


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
        self.pending: dict[str, Any] | None = state_dict

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state: dict[str, Any] | None = getattr(self, "pending", None)
        self.pending = None
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
        if new and not getattr(trainer, "fast_dev_run", False):  # set by Lightning, not declared on Trainer
            for logger in trainer.loggers:
                logger.log_metrics(new, step=trainer.global_step)

    def metrics(self) -> dict[str, float]:
        """Flat keys for ``metrics.json``: the crossing time and epoch of every threshold reached."""
        out: dict[str, float] = {}
        for key, hit in sorted(self.reached.items()):
            out[f"time_to_acc/{key}"] = hit["time_s"]
            out[f"epoch_to_acc/{key}"] = hit["epoch"]
        return out
