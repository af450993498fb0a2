"""The run's record: `metrics.json` (written last, atomically: a run directory that has one holds a finished
run) and the run's row in TensorBoard's HParams tab, for a run that did not finish too."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from mnist_logreg.errors import one_line
from mnist_logreg.outputs import Status, ended_by, metrics_path, write_record
from mnist_logreg.tracking.hparams import HPARAMS_METRICS, remove_rows, write_row

log = logging.getLogger(__name__)


class Tracker(Protocol):
    """A tracker that takes the run's final record before `metrics.json` is written (`MLflowRun`,
    `WandbRun`)."""

    def finish(self, trainer: L.Trainer, metrics: dict[str, Any]) -> None: ...


class RunRecord(Callback):
    """Writes `metrics.json` when the run's last stage ends (testing, or fitting with `test=false`).

    Records the best checkpoint's validation accuracy (the one tested), the test metrics, wall times, the
    epochs and steps trained and `identity` (the seed; a search trial's study and number). The same values
    go to TensorBoard's HParams tab, with `hparams` (what the run is compared by) and the status, in the
    run's own TensorBoard directory (`hparams.write_row`); a run that ends in an exception gets its row
    there too: pruned (with its last value), interrupted (Ctrl-C, SIGTERM) or failed.

    `trackers` are handed the record just before it is written, so that `metrics.json`, written last, still
    marks a finished run. The caller keeps the record and reads its `metrics` when the run ends.
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
        trackers: Sequence[Tracker] = (),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.path = metrics_path(output_dir)
        self.last_stage = last_stage
        self.hparams = hparams or {}
        self.metrics: dict[str, Any] = {}
        self.identity = identity or {}
        self.trackers = list(trackers)
        self._started = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":  # a run directory reused for a resume is unfinished until it ends again
            self.path.unlink(missing_ok=True)
            if trainer.is_global_zero:
                for log_dir in _tensorboard_dirs(trainer):
                    remove_rows(log_dir)
        if not self.metrics:  # the run's first stage (fitting, or eval.py's testing)
            self.metrics = {"status": Status.COMPLETED, **self.identity}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics["fit_time_s"] = time.perf_counter() - self._started
        early_stopping = trainer.early_stopping_callback  # the first EarlyStopping among the callbacks
        if early_stopping is not None and early_stopping.stopped_epoch:
            self.metrics["early_stopped_epoch"] = early_stopping.stopped_epoch
        checkpoint = trainer.checkpoint_callback
        # No score with `callbacks.model_checkpoint=null`: Lightning's own checkpoint keeps the last epoch.
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_score is not None:
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
            for tracker in self.trackers:
                tracker.finish(trainer, self.metrics)
            write_record(self.output_dir, self.metrics)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        status = ended_by(exception)
        metrics = getattr(exception, "metrics", {}) if status == Status.PRUNED else {}
        if not trainer.is_global_zero:
            return
        try:
            self._log_hparams(trainer, status, metrics)
        except Exception as error:  # the row is a view: never the reason a run's own error goes unreported
            log.warning("No HParams row for this run: %s", one_line(error))

    def _log_hparams(
        self, trainer: L.Trainer, status: Status = Status.COMPLETED, metrics: dict | None = None
    ) -> None:
        metrics = self.metrics if metrics is None else metrics
        if not self.hparams or (
            status == Status.COMPLETED and not any(name in metrics for name in HPARAMS_METRICS)
        ):
            return
        for log_dir in _tensorboard_dirs(trainer):
            write_row(log_dir, self.output_dir, self.hparams, status, metrics)


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The record's numbers as a tracker's final metrics: `val/acc` as `val/acc_best` (the tested
    checkpoint's, where the logged curve's last value is the last epoch's); not the seed, a setting."""
    return {
        "val/acc_best" if key == "val/acc" else key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed"
    }


def _tensorboard_dirs(trainer: L.Trainer) -> list[str]:
    return [logger.log_dir for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
