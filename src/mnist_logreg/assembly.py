"""The data module, the model and the trainer, built from a config: the one place where every entry point
(train, eval, find_lr) turns a config into objects."""

from __future__ import annotations

import copy
import importlib.util
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

from mnist_logreg.callbacks.progress import EpochLines
from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.config import build
from mnist_logreg.data_contract import DataDescription, describe_data
from mnist_logreg.deskew import Deskew
from mnist_logreg.errors import UserError, in_multirun
from mnist_logreg.hparams import flatten_config, group_choices, hyperparameters
from mnist_logreg.mlflow_run import RUN_ID_KEY, MLflowRun, logger_options, mlflow_logger
from mnist_logreg.model import MNIST_SHAPE, LogisticRegression
from mnist_logreg.naming import run_name, sweep_name


def build_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, LogisticRegression]:
    """The data module, set up for fitting, and the model built for its images and classes
    (data_contract.describe_data): `model.input_shape` and `model.num_classes`, left null, are the data's."""
    datamodule = build_datamodule(cfg, deskew=bool(cfg.model.get("deskew")))
    # Reading the data (a shuffled loader's first batch draws a seed) leaves the model's initial weights as
    # the seed alone makes them.
    with torch.random.fork_rng(devices=[]):
        data = describe_data(datamodule, cfg.model.get("num_classes"))
    return datamodule, build_model(cfg, data)


def build_datamodule(cfg: DictConfig, deskew: bool = False) -> L.LightningDataModule:
    """The data module. For a model that deskews, a data module that takes a `transform` (MNISTDataModule)
    deskews the training and validation splits once, as it reads them, instead of the model doing it to every
    batch of every epoch (the model sees that in its `setup`)."""
    target = get_object(cfg.data._target_)
    if deskew and "transform" in inspect.signature(target).parameters:
        return build("data", cfg.data, transform=Deskew())
    return build("data", cfg.data)


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


def build_trainer(
    cfg: DictConfig, identity: dict[str, Any] | None = None, resumed: dict[str, Any] | None = None
) -> L.Trainer:
    """The Trainer with the config's callbacks and loggers (`callbacks.<name>=null` switches one off), and the
    run's record: `metrics.json` with `identity` in it (None: no record), and the MLflow run's life when an
    MLflow logger is configured. `resumed`: the checkpoint a resumed run starts from (its MLflow run goes on).
    """
    name = run_name()
    resumed_run_id = (resumed or {}).get(RUN_ID_KEY)
    loggers = [
        build(f"logger.{key}", node, **_logger_options(key, node, name, resumed_run_id))
        for key, node in _entries(cfg, "logger")
    ]
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
        params = {**group_choices(), **flatten_config(cfg)}
        callbacks.append(MLflowRun(params, tags, output_dir / ".hydra" / "config.yaml", last_stage))
    if identity is not None:
        callbacks.append(RunRecord(output_dir, last_stage, hyperparameters(cfg), identity))
    return callbacks


def _logger_options(key: str, node: DictConfig, name: str, resumed_run_id: str | None) -> dict[str, Any]:
    """What a logger's config cannot say: the run's name (MLflow, W&B) and the MLflow run a resume goes on
    with."""
    target = get_object(node._target_) if "_target_" in node else None
    if isinstance(target, type) and issubclass(target, MLFlowLogger):
        return logger_options(key, node, name, resumed_run_id)
    if isinstance(target, type) and issubclass(target, WandbLogger):
        if importlib.util.find_spec("wandb") is None:
            raise UserError(f'logger.{key} needs wandb, which is not installed: pip install -e ".[wandb]"')
        return {"name": name} if node.get("name") is None else {}
    return {}


def _entries(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    return [(name, node) for name, node in (cfg.get(group) or {}).items() if node is not None]
