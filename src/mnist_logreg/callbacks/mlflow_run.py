"""The MLflow run's life around Lightning's `MLFlowLogger` (the logger itself, its store and its options are
in `tracking/mlflow.py`)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from mnist_logreg.callbacks.run_record import final_metrics
from mnist_logreg.outputs import METRICS, Status, ended_by
from mnist_logreg.tracking.mlflow import RUN_ID_KEY, mlflow_logger

log = logging.getLogger(__name__)


class MLflowRun(Callback):
    """The MLflow run's life around Lightning's logger, on rank 0.

    - at the start (`setup`): the run is RUNNING (a resumed one was ended before), with `params` (MLflow keeps
      a run's first params: a resumed run adds new ones only) and `tags`;
    - in every checkpoint: the run's id, so that a run resumed from it continues the same MLflow run;
    - at the end (`finish`, which the run record calls just before it writes `metrics.json`): the final
      metrics (`val/acc` as `val/acc_best`: the tested checkpoint's, not the last validation's) and the
      artifacts: `metrics.json`'s content, `config_file`, the figures in `figures_dir`, the best checkpoint
      and `provenance_files` (`code.patch`, `environment.txt`) under `provenance/`.
    """

    def __init__(
        self,
        params: dict[str, Any],
        tags: dict[str, str],
        config_file: str | Path | None = None,
        figures_dir: str | Path | None = None,
        provenance_files: Sequence[Path] = (),
    ) -> None:
        self.params = params
        self.tags = tags
        self.config_file = Path(config_file) if config_file else None
        self.figures_dir = Path(figures_dir) if figures_dir else None
        self.provenance_files = list(provenance_files)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is None or stage != "fit" or not trainer.is_global_zero:
            return
        from mlflow.entities import RunTag

        client, run_id = logger.experiment, logger.run_id
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":  # a resumed run, stopped or failed before: it runs again
            client.update_run(run_id, status="RUNNING")
        recorded = run.data.params
        changed = [
            key for key, value in self.params.items() if key in recorded and recorded[key] != str(value)
        ]
        if changed:
            key = changed[0]
            log.warning(
                "MLflow keeps a run's first params: %s=%s stays, not %s (%d differ)",
                key,
                recorded[key],
                self.params[key],
                len(changed),
            )
        logger.log_hyperparams({key: value for key, value in self.params.items() if key not in recorded})
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in self.tags.items()])

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is not None:
            checkpoint[RUN_ID_KEY] = logger.run_id

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is not None and trainer.is_global_zero:  # how it ended, as TensorBoard's HParams row says
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                logger.experiment.set_tag(logger.run_id, "status", str(ended_by(exception)))

    def finish(self, trainer: L.Trainer, metrics: dict[str, Any]) -> None:
        """The run's final metrics and artifacts (`metrics`: the record about to be written)."""
        logger = mlflow_logger(trainer.loggers)
        if logger is None or not trainer.is_global_zero:
            return
        from mlflow.entities import Metric, RunTag

        client, run_id = logger.experiment, logger.run_id
        logged = client.get_run(run_id).data.metrics
        now = int(time.time() * 1000)
        final = [
            Metric(key, value, now, trainer.global_step)
            for key, value in final_metrics(metrics).items()
            if logged.get(key) != value
        ]
        status = str(metrics.get("status", Status.COMPLETED))
        client.log_batch(run_id, metrics=final, tags=[RunTag("status", status)])
        client.log_dict(run_id, metrics, METRICS)  # the same content; the file itself comes last
        if self.config_file is not None and self.config_file.is_file():
            client.log_artifact(run_id, str(self.config_file), ".hydra")
        for path in self.provenance_files:
            if path.is_file():
                client.log_artifact(run_id, str(path), "provenance")
        if self.figures_dir is not None and self.figures_dir.is_dir():
            client.log_artifacts(run_id, str(self.figures_dir), "figures")
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if best:
            client.log_artifact(run_id, best, "checkpoints")
