"""Progress for a log file: one line per epoch where a progress bar would redraw itself into the file."""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar

log = logging.getLogger(__name__)


class EpochLines(ProgressBar):
    """Progress for a log file: one line per training epoch, with the metrics a progress bar would show.

        Epoch 2/5: val/loss 0.6012, val/acc 0.8604, train/acc 0.8331 (1.2 s)

    An epoch's line is written when the next one starts (or training ends): only then has Lightning reduced
    the epoch's training metrics.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._finished: tuple[int, float] | None = None  # the epoch not yet reported, and its time

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed mid-epoch starts without `on_train_epoch_start`: its first line times the rest.
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finished = (trainer.current_epoch, time.perf_counter() - self._started)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, pl_module)

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._finished is None or not self._enabled:
            return
        epoch, seconds = self._finished
        self._finished = None
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: the same on every line
        values = ", ".join(f"{name} {_number(value)}" for name, value in metrics.items())
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("Epoch %d%s: %s (%.1f s)", epoch + 1, total, values, seconds)


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
