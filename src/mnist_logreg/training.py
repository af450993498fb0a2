"""`train.py`: seed, build the data, model and trainer from the config, fit, test, write metrics.json."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from mnist_logreg.callbacks.stopping import SIGTERM_EXIT
from mnist_logreg.config import build, check_config
from mnist_logreg.console import config_tree, console_callbacks, format_results, quiet_libraries
from mnist_logreg.distributed import refuse_relaunch_in_multirun
from mnist_logreg.hparams import log_hparams
from mnist_logreg.mlflow_run import (
    finish_mlflow_run,
    killed_when_stopped,
    logger_options,
    mlflow_callbacks,
    start_mlflow_run,
)
from mnist_logreg.records import write_json
from mnist_logreg.resume import check_resume, last_checkpoint_path, resolve_ckpt_path, resume_command

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, test the best checkpoint on the official 10k images, record the results.

    `metrics.json` is written last (and atomically), so a run directory that has one is a finished run.
    """
    quiet_libraries()
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)  # before: it reads metrics.json
    if ckpt_path and Path(ckpt_path).resolve().parent == (output_dir / "checkpoints").resolve():
        # Resumed in its own directory, whose checkpoints Lightning would warn about as if they were strays.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    (output_dir / "metrics.json").unlink(missing_ok=True)  # a run directory reused for a resume is unfinished
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, model = build_data_and_model(cfg)
    if ckpt_path:  # before the trainer, which has things to say first
        optimizer = instantiate(cfg.optimizer)(model.parameters())
        check_resume(ckpt_path, model, datamodule, optimizer, cfg.trainer.get("max_epochs"))
    trainer = build_trainer(cfg, ckpt_path)
    refuse_relaunch_in_multirun(trainer)
    if trainer.is_global_zero:
        log.info("Config:\n%s", config_tree(cfg))
        start_mlflow_run(trainer, cfg)

    started = time.perf_counter()
    with killed_when_stopped(trainer), stopped_by_sigterm(trainer, "training"):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics: dict[str, Any] = {"status": "completed", "fit_time_s": time.perf_counter() - started}
    early_stopping = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    if early_stopping is not None and early_stopping.stopped_epoch:
        metrics["early_stopped_epoch"] = early_stopping.stopped_epoch

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    # No score with `callbacks.model_checkpoint=null`: Lightning's own checkpoint then keeps the last epoch.
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics["val/acc"] = float(checkpoint.best_model_score)
    elif "val/acc" in trainer.callback_metrics:
        metrics["val/acc"] = float(trainer.callback_metrics["val/acc"])

    if cfg.get("test"):
        started = time.perf_counter()
        with killed_when_stopped(trainer), stopped_by_sigterm(trainer, "testing"):
            (results,) = trainer.test(
                model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False
            )
        metrics["test_time_s"] = time.perf_counter() - started
        metrics.update({name: float(value) for name, value in results.items()})
        metrics["ckpt_path"] = best_path or None

    metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step, seed=cfg.seed)
    if trainer.is_global_zero:
        log_hparams(trainer, cfg, metrics)
        finish_mlflow_run(trainer, cfg, metrics)
        write_json(output_dir / "metrics.json", metrics)
        log.info("Results (%s):\n%s", output_dir, format_results(metrics))
    return metrics


def build_data_and_model(cfg: DictConfig) -> tuple[L.LightningDataModule, L.LightningModule]:
    """The data module and the model, with the optimizer and scheduler factories the model calls."""
    datamodule = build("data", cfg.data)
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    model = build("model", cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler)
    return datamodule, model


@contextmanager
def stopped_by_sigterm(trainer: L.Trainer, stage: str) -> Iterator[None]:
    """SIGTERM where `StopOnInterrupt` does not see it (before training, in testing, or with that callback
    off): Lightning raises `SIGTERMException`, a `SystemExit` with status 0. Here: one line with the resume
    command and status 143, so that a scheduler or script does not take the run for a success."""
    try:
        yield
    except SIGTERMException:
        command = resume_command(last_checkpoint_path(trainer))
        log.error("SIGTERM during %s: stopped without metrics.json; to finish the run: %s", stage, command)
        sys.exit(SIGTERM_EXIT)


def build_trainer(cfg: DictConfig, ckpt_path: str | None = None) -> L.Trainer:
    """The Trainer with the config's callbacks and loggers; `callbacks.<name>=null` switches one off.

    `ckpt_path`: the checkpoint a resumed run starts from, whose MLflow run an MLflow logger continues.
    """
    callbacks = [build(f"callbacks.{name}", c) for name, c in _entries(cfg, "callbacks")]
    # Where the output goes decides how progress is shown: rich's live bar in a terminal, one log line per
    # epoch in a file or a pipe (`console_callbacks`).
    callbacks = console_callbacks(callbacks, terminal=sys.stdout.isatty())
    loggers = [
        build(f"logger.{name}", node, **logger_options(name, node, ckpt_path))
        for name, node in _entries(cfg, "logger")
    ]
    callbacks += mlflow_callbacks(loggers)
    options = {}
    # Lightning adds a progress bar of its own when given none; `callbacks.progress_bar=null` means none.
    if "enable_progress_bar" not in cfg.trainer and not any(isinstance(c, ProgressBar) for c in callbacks):
        options["enable_progress_bar"] = False
    return build(
        "trainer",
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        **options,
    )


def _entries(cfg: DictConfig, group: str) -> list[tuple[str, DictConfig]]:
    return [(name, node) for name, node in (cfg.get(group) or {}).items() if node is not None]
