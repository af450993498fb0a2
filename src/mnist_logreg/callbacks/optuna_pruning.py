"""Pruning for an Optuna search: each validation's value is reported to the job's trial, and the fit stops
when Optuna's pruner says the trial is hopeless.

The Optuna sweeper adds this callback to every job of a search run with `hydra.sweeper.pruner=median` (or
`hyperband`), with the trial's identity (as in the job's `trial` config node). The job reaches the study
through its storage, so it works whatever launcher ran it, in the sweeper's process or on another machine.

Why not optuna-integration's `PyTorchLightningPruningCallback`: it reads Lightning's private
`trainer._accelerator_connector`, and under DDP it needs an RDB storage and a call to its `check_pruned()`
after the fit. This one reports and decides on rank 0 and broadcasts the decision to the other ranks, with
any storage (tested in one process; the DDP path is written, not tested).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback

from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.study import load_trial


class TrialPruned(optuna.TrialPruned):
    """Optuna's signal that a trial was pruned, with the metrics at that point for the job's record."""

    def __init__(self, message: str, metrics: dict[str, Any]) -> None:
        super().__init__(message)
        self.metrics = metrics


class OptunaPruning(Callback):
    """Report `monitor` after every validation as the trial's value at that epoch; raise `TrialPruned` when
    the pruner says so.

    The trial: trial `number` of study `study_name` in `storage` (as in the job's `trial` node); `pruner`:
    its name (`median`, `hyperband`), as the sweeper was given it.
    """

    def __init__(
        self, storage: str, study_name: str, number: int, monitor: str = "val/acc", pruner: str = "median"
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.number = number
        self.monitor = monitor
        self.pruner = pruner
        self._trial: optuna.trial.Trial | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            self._trial = load_trial(self.storage, self.study_name, self.number, self.pruner)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch  # the step Optuna compares trials at: batch sizes differ, epochs do not
        prune = False
        if self._trial is not None:
            self._trial.report(value, step=epoch)
            prune = self._trial.should_prune()
        if not trainer.strategy.broadcast(prune):
            return
        message = (
            f"Pruned by Optuna after epoch {epoch + 1}: {self.monitor} {value:.4f}"  # as epoch lines count
        )
        metrics = {self.monitor: value, "epochs": epoch + 1, "steps": trainer.global_step}
        # What made the trial, as a completed one records it (the sweep summary compares the jobs' code).
        record = next((c for c in trainer.callbacks if isinstance(c, RunRecord)), None)
        if record is not None and "provenance" in record.metrics:
            metrics["provenance"] = record.metrics["provenance"]
        raise TrialPruned(message, metrics)
