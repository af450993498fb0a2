"""`eval.py`: test a checkpoint on the official 10k MNIST test images and write metrics.json."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig

from mnist_logreg.assembly import build_datamodule, build_trainer
from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.checkpoints import load_model
from mnist_logreg.config import check_parts
from mnist_logreg.console import format_results, quiet_libraries
from mnist_logreg.provenance import record_provenance

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the official 10k test images: the classifier, input transform included, comes
    from the checkpoint alone, so the numbers equal those of the training run that wrote it."""
    quiet_libraries()
    check_parts(cfg)
    model = load_model(cfg.get("ckpt_path"))
    datamodule = build_datamodule(cfg)
    identity = {
        "ckpt_path": os.path.abspath(cfg.ckpt_path),
        "provenance": record_provenance(cfg.paths.output_dir, datamodule),
    }
    trainer = build_trainer(cfg, identity=identity)
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = RunRecord.of(trainer).metrics
    if trainer.is_global_zero:
        log.info("Results (%s):\n%s", cfg.paths.output_dir, format_results(metrics))
    return metrics
