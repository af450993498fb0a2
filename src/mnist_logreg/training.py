"""`train.py`: build the data, model and trainer from the config, fit, test the best checkpoint, record."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_logreg.assembly import build_datamodule, build_model, build_trainer
from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.config import check_config
from mnist_logreg.console import config_tree, format_results, quiet_libraries
from mnist_logreg.distributed import refuse_relaunch_in_multirun
from mnist_logreg.errors import in_multirun
from mnist_logreg.provenance import record_provenance
from mnist_logreg.resume import resume_point

log = logging.getLogger(__name__)

DEBUG = "debug"  # the status of a debug preset's run: a smoke test, never a result


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, test the best checkpoint on the official 10k test images, and return what
    the run record wrote to `metrics.json` (written last: a run directory that has one is a finished run)."""
    quiet_libraries()
    check_config(cfg)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    L.seed_everything(cfg.seed, verbose=False)
    model = build_model(cfg)
    datamodule = build_datamodule(cfg, model)
    ckpt_path, resumed = resume_point(cfg, model, datamodule)  # checked before the trainer says anything
    identity = {**run_identity(cfg), "provenance": record_provenance(cfg.paths.output_dir, datamodule)}
    trainer = build_trainer(cfg, identity=identity, resumed=resumed)
    refuse_relaunch_in_multirun(trainer)
    if trainer.is_global_zero and not in_multirun():  # a sweep prints it once (console.ConfigTreeOnce)
        log.info("Config:\n%s", config_tree(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    if cfg.test:
        trainer.test(model, datamodule=datamodule, ckpt_path=best_checkpoint(trainer), verbose=False)
    metrics = RunRecord.of(trainer).metrics
    if trainer.is_global_zero:
        log.info("Results (%s):\n%s", cfg.paths.output_dir, format_results(metrics))
    return metrics


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint with the best `val/acc`; None (the last weights) without a model checkpoint."""
    checkpoint = trainer.checkpoint_callback
    return (checkpoint.best_model_path if checkpoint is not None else "") or None


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What says which run this was, beside its results: the seed, and a search trial's study and number.
    A `debug=<preset>` run (conf/debug/) is a smoke test: its status is "debug", not "completed", and it
    names its preset."""
    identity: dict[str, Any] = {"seed": cfg.seed}
    debug = HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None
    if debug:
        identity = {"status": DEBUG, "debug": str(debug), **identity}
    trial = cfg.get("trial") or {}
    if trial.get("study_name") is not None:
        identity["study"] = trial.study_name
    if trial.get("number") is not None:
        identity["trial"] = trial.number
    return identity
