"""A W&B run's config and summary: what Lightning's `WandbLogger` leaves to its user.

Lightning logs the metrics as the run trains; the model here saves no hyperparameters, so without this the
run's config would be empty and W&B could not compare runs by their settings. The same flattened config as
MLflow's params (`optimizer/lr`, `data/batch_size`, the option chosen in each group: `tracking/hparams.py`),
and at the end the same final metrics as MLflow's (`val/acc_best`, `test/acc`, `fit_time_s`, ...), with the
status.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, WandbLogger

from mnist_logreg.callbacks.run_record import final_metrics


def wandb_logger(loggers: list[Logger]) -> WandbLogger | None:
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


class WandbRun(Callback):
    """On rank 0: `params` into the W&B run's config as the run's first stage starts; the run record's final
    metrics and status into its summary when the record hands them over (`finish`), before it writes."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self._configured = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = wandb_logger(trainer.loggers)
        if logger is None or self._configured or not trainer.is_global_zero:
            return
        logger.log_hyperparams(self.params)  # `wandb.config.update`, changed values allowed (a resume)
        self._configured = True

    def finish(self, trainer: L.Trainer, metrics: dict[str, Any]) -> None:
        logger = wandb_logger(trainer.loggers)
        if logger is None or not trainer.is_global_zero:
            return
        logger.experiment.summary.update({**final_metrics(metrics), "status": str(metrics.get("status"))})
