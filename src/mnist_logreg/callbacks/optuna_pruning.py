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

import copy
from typing import Any

import lightning as L
import optuna
from lightning.pytorch.callbacks import Callback

from mnist_logreg.sweeps.study import FOLD_STEP, load_trial


class TrialPruned(optuna.TrialPruned):
    """Optuna's signal that a trial was pruned, with the metrics at that point for the job's record."""

    def __init__(self, message: str, metrics: dict[str, Any]) -> None:
        super().__init__(message)
        self.metrics = metrics


class OptunaPruning(Callback):
    """Report `monitor` after every validation as the trial's value at that epoch; raise `TrialPruned` when
    the pruner says so.

    The trial: trial `number` of study `study_name` in `storage` (as in the job's `trial` node); `pruner`:
    its name (`median`, `hyperband`), as the sweeper was given it. `fold`: the fold this job validates on,
    for a trial scored over folds: its epochs are reported at steps of its own (`FOLD_STEP`) and the trial
    is judged on this fold's values alone, against the other trials' values for this fold and epoch.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        number: int,
        monitor: str = "val/acc",
        pruner: str = "median",
        fold: int | None = None,
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.number = number
        self.monitor = monitor
        self.pruner = pruner
        self.fold = fold
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
        if self._trial is not None and self.fold is None:
            self._trial.report(value, step=epoch)
            prune = self._trial.should_prune()
        elif self._trial is not None and self.fold is not None:
            prune = self._fold_should_prune(self._trial, self.fold, value, epoch)
        if not trainer.strategy.broadcast(prune):
            return
        message = (
            f"Pruned by Optuna after epoch {epoch + 1}: {self.monitor} {value:.4f}"  # as epoch lines count
        )
        raise TrialPruned(message, {self.monitor: value, "epochs": epoch + 1, "steps": trainer.global_step})

    def _fold_should_prune(self, trial: optuna.trial.Trial, fold: int, value: float, epoch: int) -> bool:
        """Report this fold's epoch at its own step, and ask the pruner about the trial as this fold sees
        it: Optuna's `should_prune` would judge the trial's latest step, which may be another fold's."""
        first = fold * FOLD_STEP
        trial.report(value, step=first + epoch)
        study = trial.study
        (frozen,) = [t for t in study.get_trials(deepcopy=False) if t.number == self.number]
        this_fold = copy.copy(frozen)
        this_fold.intermediate_values = {
            step: v for step, v in frozen.intermediate_values.items() if first <= step < first + FOLD_STEP
        }
        return study.pruner.prune(study, this_fold)
