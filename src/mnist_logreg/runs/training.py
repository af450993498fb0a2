"""`train.py`: build the data, model and trainer from the config, fit, test the best checkpoint, record."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from mnist_logreg.callbacks.config_tree import config_tree
from mnist_logreg.core.data_contract import require_test_loader
from mnist_logreg.runs.assembly import build_data_and_model, build_record, build_trainer
from mnist_logreg.runs.config import check_config
from mnist_logreg.runs.console import format_results, quiet_libraries
from mnist_logreg.runs.distributed import refuse_relaunch_in_multirun
from mnist_logreg.runs.resume import resume_point
from mnist_logreg.runtime import in_multirun, run_identity
from mnist_logreg.tracking.mlflow import RUN_ID_KEY
from mnist_logreg.tracking.provenance import record_provenance

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, test the best checkpoint on the official 10k test images, and return what
    the run record wrote to `metrics.json` (written last: a run directory that has one is a finished run)."""
    quiet_libraries()
    optimizer = check_config(cfg)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, model = build_data_and_model(cfg)
    if cfg.test:
        require_test_loader(datamodule, fix=", or train with test=false")
    # Checked before the trainer says anything; a resumed run goes on logging to its own MLflow run.
    ckpt_path, resumed = resume_point(cfg, model, datamodule, optimizer)
    provenance = record_provenance(cfg.paths.output_dir, datamodule)
    record = build_record(cfg, {**run_identity(cfg), "provenance": provenance})
    trainer = build_trainer(cfg, record, (resumed or {}).get(RUN_ID_KEY), provenance)
    refuse_relaunch_in_multirun(trainer)
    if trainer.is_global_zero and not in_multirun():  # a sweep prints it once (callbacks/config_tree.py)
        log.info("Config:\n%s", config_tree(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if cfg.test:
        trainer.test(model, datamodule=datamodule, ckpt_path=best_checkpoint(trainer), verbose=False)
    metrics = record.metrics
    if trainer.is_global_zero:
        log.info("Results (%s):\n%s", cfg.paths.output_dir, format_results(metrics))
    return metrics


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint with the best `val/acc`; None (the last weights) without a model checkpoint."""
    checkpoint = trainer.checkpoint_callback
    return (checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else "") or None
