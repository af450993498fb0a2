"""`eval.py`: test a checkpoint on the official 10k MNIST test images and write metrics.json."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mnist_logreg.checkpoints import load_checkpoint
from mnist_logreg.config import check_parts
from mnist_logreg.console import format_results, quiet_libraries
from mnist_logreg.records import write_json
from mnist_logreg.training import build_trainer

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the official 10k test images; the model and data settings come from it alone.

    The numbers equal those of the training run that wrote the checkpoint: same weights, same data.
    """
    quiet_libraries()
    check_parts(cfg)
    output_dir = Path(cfg.paths.output_dir)
    model, datamodule = load_checkpoint(cfg.get("ckpt_path"), data_dir=cfg.paths.data_dir)
    trainer = build_trainer(cfg)
    started = time.perf_counter()
    (results,) = trainer.test(model, datamodule=datamodule, verbose=False)
    metrics: dict[str, Any] = {"status": "completed", "test_time_s": time.perf_counter() - started}
    metrics.update({name: float(value) for name, value in results.items()})
    metrics["ckpt_path"] = os.path.abspath(cfg.ckpt_path)
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        log.info("Results (%s):\n%s", output_dir, format_results(metrics))
    return metrics
