"""`eval.py`: test a checkpoint on the data's test split (MNIST's official 10k test images by default) and
write metrics.json, each class's accuracy by name among them."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig

from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.data_contract import check_test_data
from mnist_logreg.runs.assembly import build_datamodule, build_record, build_trainer
from mnist_logreg.runs.config import check_parts
from mnist_logreg.runs.console import format_results, quiet_libraries
from mnist_logreg.tracking.provenance import record_provenance

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the official 10k test images: the classifier, input transform included, comes
    from the checkpoint alone, so the numbers equal those of the training run that wrote it."""
    quiet_libraries()
    check_parts(cfg)
    model = load_model(cfg.get("ckpt_path"))
    datamodule = build_datamodule(cfg)
    check_test_data(datamodule, model.input_shape, model.class_names, f"ckpt_path={cfg.ckpt_path}")
    provenance = record_provenance(cfg.paths.output_dir, datamodule)
    record = build_record(cfg, {"ckpt_path": os.path.abspath(cfg.ckpt_path), "provenance": provenance})
    trainer = build_trainer(cfg, record, provenance=provenance)
    trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = record.metrics
    if trainer.is_global_zero:
        log.info("Results (%s):\n%s", cfg.paths.output_dir, format_results(metrics))
    return metrics
