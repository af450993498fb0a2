"""The data module, the model and the trainer, built from a config: the one place where every entry point
(train, eval, find_lr) turns a config into objects."""

from __future__ import annotations

import copy
import inspect
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
from omegaconf import DictConfig, open_dict

from mnist_logreg.callbacks.mlflow_run import MLflowRun
from mnist_logreg.callbacks.progress import EpochLines
from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.callbacks.wandb_run import WandbRun
from mnist_logreg.core.data_contract import DataDescription, describe_data
from mnist_logreg.core.deskew import Deskew
from mnist_logreg.core.model import MNIST_SHAPE, LogisticRegression
from mnist_logreg.errors import UserError, require_extra
from mnist_logreg.naming import run_name, sweep_name
from mnist_logreg.outputs import HYDRA
from mnist_logreg.runs.config import build
from mnist_logreg.runtime import group_choices, in_multirun
from mnist_logreg.tracking.hparams import flatten_config, hyperparameters
from mnist_logreg.tracking.mlflow import logger_options, mlflow_logger, provenance_files, provenance_tags
from mnist_logreg.tracking.provenance import UNKNOWN


def build_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, LogisticRegression]:
    """The data module, set up for fitting, and the model built for its images and classes
    (`core/data_contract.describe_data`): `model.input_shape` and `model.num_classes`, left null, are the
    data's.

    For a model that deskews, a data module that takes a `transform` (MNISTDataModule) deskews the training
    and validation splits once, as it reads them, instead of the model doing it to every batch of every
    epoch; the model is told so here, where both are built.
    """
    deskew_once = bool(cfg.model.get("deskew")) and _takes_transform(cfg.data)
    datamodule = build("data", cfg.data, transform=Deskew()) if deskew_once else build_datamodule(cfg)
    # Reading the data (a shuffled loader's first batch draws a seed) leaves the model's initial weights as
    # the seed alone makes them.
    with torch.random.fork_rng(devices=[]):
        data = describe_data(datamodule, cfg.model.get("num_classes"))
    model = build_model(cfg, data)
    model.fit_batches_transformed = deskew_once
    return datamodule, model


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """The data module as configured, its images as read (eval and export test a model, which transforms
    them itself)."""
    return build("data", cfg.data)


def _takes_transform(node: DictConfig) -> bool:
    return "transform" in inspect.signature(get_object(node._target_)).parameters


def build_model(cfg: DictConfig, data: DataDescription | None = None) -> LogisticRegression:
    """The model for `data` (None: the config's `model.input_shape` and `model.num_classes`, MNIST's when
    null), with the optimizer and scheduler factories it calls in `configure_optimizers`.

    The network's sizes are interpolated from `model.input_shape` and `model.num_classes`
    (conf/model/net/linear.yaml), so the data's are filled into a copy of the config before it is built.
    """
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if data is None:
            cfg.model.input_shape = cfg.model.get("input_shape") or list(MNIST_SHAPE)
            cfg.model.num_classes = cfg.model.get("num_classes") or 10
            class_names = {}
        else:
            if cfg.model.get("input_shape") and tuple(cfg.model.input_shape) != data.input_shape:
                raise UserError(
                    f"model.input_shape={list(cfg.model.input_shape)} and the data's images are "
                    f"{list(data.input_shape)}: leave model.input_shape=null to take the data's."
                )
            cfg.model.input_shape = list(data.input_shape)
            cfg.model.num_classes = data.num_classes
            class_names = {"class_names": data.class_names} if data.class_names else {}
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    return build("model", cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler, **class_names)


def build_record(cfg: DictConfig, identity: dict[str, Any]) -> RunRecord:
    """The run's record (`metrics.json`, written when its last stage ends), with `identity` in it."""
    last_stage = "test" if cfg.get("test", True) else "fit"
    return RunRecord(cfg.paths.output_dir, last_stage, hyperparameters(cfg), identity)


def build_trainer(
    cfg: DictConfig,
    record: RunRecord | None = None,
    mlflow_run_id: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> L.Trainer:
    """The Trainer with the config's callbacks and loggers (`callbacks.<name>=null` switches one off), then
    the trackers' own runs (MLflow's, `mlflow_run_id`: the run a resume goes on with; W&B's), each told
    what made the run (`provenance`), then `record` (None: no record), which hands the trackers its final
    metrics before it writes.
    """
    name = run_name()
    provenance = provenance or {}
    loggers = [
        build(f"logger.{key}", node, **_logger_options(key, node, name, mlflow_run_id, provenance))
        for key, node in _entries(cfg, "logger")
    ]
    callbacks = [build(f"callbacks.{key}", node) for key, node in _entries(cfg, "callbacks")]
    if not loggers:  # nothing to log the learning rate to (Lightning refuses the monitor then)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # Where the output goes decides how progress is shown: rich's live bar in a terminal, one log line per
    # epoch in a file or a pipe; a sweep's jobs show no model summary each.
    callbacks = console_callbacks(callbacks, terminal=sys.stdout.isatty(), multirun=in_multirun())
    # The trackers' own runs, handed the record's final metrics before it writes `metrics.json`.
    trackers: list[MLflowRun | WandbRun] = []
    if mlflow_logger(loggers) is not None:
        trackers.append(_mlflow_run(cfg, provenance))
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        # W&B's config takes the provenance too: `wandb.init(config=...)` cannot be given through Hydra's
        # `instantiate`, whose own first argument is `config`.
        trackers.append(WandbRun({**_params(cfg), **({"provenance": provenance} if provenance else {})}))
    callbacks += trackers
    if record is not None:
        record.trackers += trackers
        callbacks.append(record)
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


def _mlflow_run(cfg: DictConfig, provenance: dict[str, Any]) -> MLflowRun:
    """The MLflow run's params (the flattened config and the group choices), tags (the `tags` list, the run
    directory, the sweep, what made the run) and what it keeps at the end (the config file, the figures,
    the provenance's files)."""
    output_dir = Path(cfg.paths.output_dir)
    tags = dict.fromkeys(map(str, cfg.get("tags") or []), "")
    tags["run_dir"] = str(output_dir.resolve())
    if in_multirun():
        tags["sweep"] = sweep_name()
    params = _params(cfg)
    figures = (cfg.get("callbacks") or {}).get("figures")
    figures_dir = figures.get("dirpath") if figures is not None else None
    tags.update(provenance_tags(provenance))
    files = provenance_files(output_dir, provenance)
    return MLflowRun(params, tags, output_dir / HYDRA / "config.yaml", figures_dir, provenance_files=files)


def _params(cfg: DictConfig) -> dict[str, Any]:
    """What MLflow's params and W&B's config hold, alike: the flattened config and the options chosen."""
    return {**group_choices(), **flatten_config(cfg)}


def _logger_options(
    key: str, node: DictConfig, name: str, mlflow_run_id: str | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    """What a logger's config cannot say: the run's name (MLflow, W&B), the MLflow run a resume goes on
    with, and the commit in W&B's own git fields."""
    target = get_object(node._target_) if "_target_" in node else None
    if isinstance(target, type) and issubclass(target, MLFlowLogger):
        return logger_options(key, node, name, mlflow_run_id)
    if isinstance(target, type) and issubclass(target, WandbLogger):
        require_extra("wandb", "wandb", needed_by=f"logger.{key}")
        return {**({"name": name} if node.get("name") is None else {}), **wandb_provenance(provenance)}
    return {}


def wandb_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    """The commit in W&B's own git fields, where W&B shows a run's code version (the whole provenance goes
    to its config, `WandbRun`)."""
    commit = (provenance.get("code") or {}).get("commit")
    if commit in (None, UNKNOWN):
        return {}
    import wandb

    return {"settings": wandb.Settings(git_commit=commit)}


def _entries(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    return [(name, node) for name, node in (cfg.get(group) or {}).items() if node is not None]
