"""The run's record: `metrics.json` (written last, atomically: a run directory that has one holds a finished
run) and the run's row in TensorBoard's HParams tab."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.loggers import TensorBoardLogger

from mnist_logreg.records import write_json

log = logging.getLogger(__name__)

# The HParams tab shows a session's metric as the last value of its tag in the run. Under their own tags,
# so that the tested checkpoint's values add no point to the training curves of `val/acc` and `test/acc`.
HPARAMS_METRICS = {"val/acc": "hparams/val_acc", "test/acc": "hparams/test_acc"}


class RunRecord(Callback):
    """Writes `metrics.json` when the run's last stage ends (testing, or fitting with `test=false`).

    Records the best checkpoint's validation accuracy (the one tested), the test metrics, wall times, the
    epochs and steps trained and `identity` (the seed; a search trial's study and number; the provenance;
    a debug preset's run: its own status, which takes the place of "completed"). The same values
    go to TensorBoard's HParams tab through the logger's own `log_hyperparams(params, metrics)`, with
    `hparams` (what the run is compared by), in the run's own event files.
    """

    def __init__(
        self,
        output_dir: str | Path,
        last_stage: str = "test",
        hparams: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(output_dir) / "metrics.json"
        self.last_stage = last_stage
        self.hparams = hparams or {}
        self.metrics: dict[str, Any] = {}
        self.identity = identity or {}
        self._started = 0.0

    @staticmethod
    def of(trainer: L.Trainer) -> RunRecord:
        """The trainer's run record."""
        return next(c for c in trainer.callbacks if isinstance(c, RunRecord))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a run directory reused for a resume is unfinished until it ends again
            self.path.unlink(missing_ok=True)
        if not self.metrics:  # the run's first stage (fitting, or eval.py's testing)
            self.metrics = {"status": "completed", **self.identity}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics["fit_time_s"] = time.perf_counter() - self._started
        early_stopping = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        if early_stopping is not None and early_stopping.stopped_epoch:
            self.metrics["early_stopped_epoch"] = early_stopping.stopped_epoch
        checkpoint = trainer.checkpoint_callback
        # No score with `callbacks.model_checkpoint=null`: Lightning's own checkpoint keeps the last epoch.
        if checkpoint is not None and checkpoint.best_model_score is not None:
            self.metrics["val/acc"] = float(checkpoint.best_model_score)
        elif "val/acc" in trainer.callback_metrics:
            self.metrics["val/acc"] = float(trainer.callback_metrics["val/acc"])
        self.metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics["test_time_s"] = time.perf_counter() - self._started
        tested = {name: float(value) for name, value in trainer.callback_metrics.items()}
        self.metrics.update({name: value for name, value in tested.items() if name.startswith("test/")})
        # The checkpoint tested; eval.py, which hands the trainer a loaded model, names it in `identity`.
        self.metrics["ckpt_path"] = trainer.ckpt_path or self.metrics.get("ckpt_path")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != self.last_stage:  # teardown comes after a stage that ended normally, never after an error
            return
        if "provenance" in self.metrics:  # the long part last: the results first, where a reader looks
            self.metrics["provenance"] = self.metrics.pop("provenance")
        if trainer.is_global_zero:
            self._log_hparams(trainer)
            write_json(self.path, self.metrics)

    def _log_hparams(self, trainer: L.Trainer) -> None:
        values = {tag: self.metrics[name] for name, tag in HPARAMS_METRICS.items() if name in self.metrics}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and self.hparams and values:
                logger.log_hyperparams(self.hparams, values)
