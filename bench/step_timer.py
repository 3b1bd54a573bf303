"""A Lightning callback for bench/throughput.py: the wall time of ``steps`` training steps after ``warmup``.

Timed from the end of the last warm-up step to the end of the last timed step, so it counts
the same work as the notebook loop's timer: fetching, augmenting and training each batch.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L


class StepTimer(L.Callback):
    def __init__(self, warmup: int, steps: int, out: str) -> None:
        self.warmup, self.steps, self.out = warmup, steps, Path(out)
        self.start = 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx + 1 == self.warmup:
            self.start = time.perf_counter()
        elif batch_idx + 1 == self.warmup + self.steps:
            seconds = time.perf_counter() - self.start
            images = self.steps * trainer.datamodule.batch_size
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.out.write_text(json.dumps({"img_per_s": images / seconds, "peak_rss_mb": peak}))
