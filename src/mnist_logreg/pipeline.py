"""One training run: seed, build data, model and trainer from the config, fit, test, write metrics.json."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.console import format_results, quiet_libraries

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit on the training split, test the best checkpoint on the official 10k images, record the results.

    `metrics.json` is written last (and atomically), so a run directory that has one is a finished run.
    """
    quiet_libraries()
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    model: L.LightningModule = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in (cfg.get("callbacks") or {}).values()],
        logger=[instantiate(lg) for lg in (cfg.get("logger") or {}).values()] or False,
    )
    if trainer.is_global_zero:
        log.info("Config:\n%s", OmegaConf.to_yaml(cfg, resolve=True))

    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics: dict[str, Any] = {"status": "completed", "fit_time_s": time.perf_counter() - started}

    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""
    if best_path:
        metrics["val/acc"] = float(checkpoint.best_model_score)
    elif "val/acc" in trainer.callback_metrics:
        metrics["val/acc"] = float(trainer.callback_metrics["val/acc"])

    if cfg.get("test"):
        started = time.perf_counter()
        (results,) = trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
        metrics["test_time_s"] = time.perf_counter() - started
        metrics.update({name: float(value) for name, value in results.items()})
        metrics["ckpt_path"] = best_path or None

    metrics.update(epochs=trainer.current_epoch, steps=trainer.global_step, seed=cfg.seed)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        log.info("Results (%s):\n%s", output_dir, format_results(metrics))
    return metrics


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
