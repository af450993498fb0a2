"""The data module, the model and the trainer, built from a config: the one place where every entry point
(train, eval, find_lr) turns a config into objects."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import (
    Callback,
    LearningRateMonitor,
    ModelSummary,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from omegaconf import DictConfig

from mnist_logreg.callbacks.progress import EpochLines
from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.config import build
from mnist_logreg.errors import UserError, in_multirun
from mnist_logreg.hparams import flatten_config, group_choices, hyperparameters
from mnist_logreg.mlflow_run import (
    RUN_ID_KEY,
    MLflowRun,
    logger_options,
    mlflow_logger,
    provenance_files,
    provenance_tags,
)
from mnist_logreg.model import LogisticRegression
from mnist_logreg.naming import run_name, sweep_name
from mnist_logreg.provenance import UNKNOWN


def build_datamodule(cfg: DictConfig, model: LogisticRegression | None = None) -> L.LightningDataModule:
    """The data module; given the model it will fit, it applies the model's input transform (if any) to the
    training and validation splits once, as it reads them, instead of the model doing it to every batch of
    every epoch."""
    if model is None or isinstance(model.transform, torch.nn.Identity):
        return build("data", cfg.data)
    return build("data", cfg.data, transform=model.transform)


def build_model(cfg: DictConfig) -> LogisticRegression:
    """The model, with the optimizer and scheduler factories it calls in `configure_optimizers`."""
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return build("model", cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler)


def build_trainer(
    cfg: DictConfig, identity: dict[str, Any] | None = None, resumed: dict[str, Any] | None = None
) -> L.Trainer:
    """The Trainer with the config's callbacks and loggers (`callbacks.<name>=null` switches one off), and the
    run's record: `metrics.json` with `identity` in it (None: no record), and the MLflow run's life when an
    MLflow logger is configured. `resumed`: the checkpoint a resumed run starts from (its MLflow run goes on).
    """
    name = run_name()
    resumed_run_id = (resumed or {}).get(RUN_ID_KEY)
    provenance = (identity or {}).get("provenance") or {}
    loggers = [
        build(f"logger.{key}", node, **_logger_options(key, node, name, resumed_run_id, provenance))
        for key, node in _entries(cfg, "logger")
    ]
    record_provenance_in_wandb(loggers, provenance)
    callbacks = [build(f"callbacks.{key}", node) for key, node in _entries(cfg, "callbacks")]
    if not loggers:  # nothing to log the learning rate to (Lightning refuses the monitor then)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # Where the output goes decides how progress is shown: rich's live bar in a terminal, one log line per
    # epoch in a file or a pipe; a sweep's jobs show no model summary each.
    callbacks = console_callbacks(callbacks, terminal=sys.stdout.isatty(), multirun=in_multirun())
    last_stage = "test" if cfg.get("test", True) else "fit"
    callbacks += _record_callbacks(cfg, loggers, last_stage, identity)
    options = {}
    # Lightning adds a progress bar of its own when given none; `callbacks.progress_bar=null` means none.
    if "enable_progress_bar" not in cfg.trainer and not any(isinstance(c, ProgressBar) for c in callbacks):
        options["enable_progress_bar"] = False
    return build("trainer", cfg.trainer, callbacks=callbacks, logger=loggers or False, **options)


def console_callbacks(callbacks: list[Callback], terminal: bool, multirun: bool = False) -> list[Callback]:
    """The callbacks, with the progress bar fit for where the output goes.

    In a terminal, as configured: rich redraws its live progress bar in place. Elsewhere (a file or a pipe:
    SLURM, submitit, CI logs, `| tee`) every redraw would add to the file, so one log line per epoch takes
    the bar's place (none for a bar switched off, `refresh_rate=0`). Rich's model summary is a static
    table, written once either way; a sweep's jobs, which all have the same model, leave it out.
    """
    kept: list[Callback] = []
    for callback in callbacks:
        if multirun and isinstance(callback, ModelSummary):
            continue
        if terminal or not isinstance(callback, RichProgressBar):
            kept.append(callback)
        elif callback.is_enabled:
            kept.append(EpochLines())
    return kept


def _record_callbacks(
    cfg: DictConfig, loggers: list, last_stage: str, identity: dict[str, Any] | None
) -> list[Callback]:
    """The MLflow run (if any) and then the run record: the MLflow run's last artifacts go in before
    `metrics.json`, which is written last."""
    output_dir = Path(cfg.paths.output_dir)
    callbacks: list[Callback] = []
    if mlflow_logger(loggers) is not None:
        tags = dict.fromkeys(map(str, cfg.get("tags") or []), "")
        tags["run_dir"] = str(output_dir.resolve())
        if in_multirun():
            tags["sweep"] = sweep_name()
        provenance = (identity or {}).get("provenance") or {}
        tags.update(provenance_tags(provenance))
        params = {**group_choices(), **flatten_config(cfg)}
        config_file = output_dir / ".hydra" / "config.yaml"
        files = provenance_files(output_dir, provenance)
        callbacks.append(MLflowRun(params, tags, config_file, last_stage, provenance_files=files))
    if identity is not None:
        callbacks.append(RunRecord(output_dir, last_stage, hyperparameters(cfg), identity))
    return callbacks


def _logger_options(
    key: str, node: DictConfig, name: str, resumed_run_id: str | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    """What a logger's config cannot say: the run's name (MLflow, W&B), the MLflow run a resume goes on
    with, and what made the run (W&B; MLflow has it as tags, from `MLflowRun`)."""
    target = get_object(node._target_) if "_target_" in node else None
    if isinstance(target, type) and issubclass(target, MLFlowLogger):
        return logger_options(key, node, name, resumed_run_id)
    if isinstance(target, type) and issubclass(target, WandbLogger):
        if importlib.util.find_spec("wandb") is None:
            raise UserError(f'logger.{key} needs wandb, which is not installed: pip install -e ".[wandb]"')
        return {**({"name": name} if node.get("name") is None else {}), **wandb_provenance(provenance)}
    return {}


def wandb_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """The commit in W&B's own git fields, where W&B shows a run's code version (the whole provenance goes
    to its config: `record_provenance_in_wandb`)."""
    commit = (provenance.get("code") or {}).get("commit")
    if commit in (None, UNKNOWN):
        return {}
    import wandb

    return {"settings": wandb.Settings(git_commit=commit)}


def record_provenance_in_wandb(loggers: list, provenance: dict[str, Any]) -> None:
    """The run's provenance under `provenance` in each W&B run's config (`wandb.init(config=...)` cannot be
    given through Hydra's `instantiate`, whose own first argument is `config`)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and provenance:
            logger.log_hyperparams({"provenance": provenance})


def _entries(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    return [(name, node) for name, node in (cfg.get(group) or {}).items() if node is not None]
