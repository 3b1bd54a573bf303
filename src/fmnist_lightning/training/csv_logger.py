"""Loggers that keep what an earlier invocation of the same run wrote."""

from __future__ import annotations

import csv
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, starting from the header of an existing ``metrics.csv`` instead of replacing it.

    Lightning's writer forgets the file's columns when a new process opens it, so the first save of a
    resumed run rewrites the file without the earlier rows. Knowing the columns, it appends, and
    rewrites (keeping every row) only when a new column appears.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])

    def _check_log_dir_exists(self) -> None:
        # Lightning warns that it will delete earlier logs here; this writer keeps them.
        pass


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume: the resumed run's rows follow the earlier ones."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
