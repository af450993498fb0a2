"""`find_lr.py`: Lightning's learning-rate range test on the configured model, data and optimizer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.tuner import Tuner
from matplotlib.figure import Figure
from omegaconf import DictConfig

from mnist_logreg.files import replaced_atomically, write_json
from mnist_logreg.runs.assembly import build_data_and_model, build_trainer
from mnist_logreg.runs.config import check_config
from mnist_logreg.runs.console import quiet_libraries
from mnist_logreg.runtime import command_line

log = logging.getLogger(__name__)


def find_lr(cfg: DictConfig) -> dict[str, Any]:
    """Run `Tuner.lr_find`, draw loss against learning rate, and print the suggested rate.

    The suggestion is Lightning's: the rate at the steepest descent of the loss. Lightning restores the
    model's initial weights afterwards, and the trainer's callbacks and loggers are its own during the test.
    """
    quiet_libraries()
    check_config(cfg)
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, model = build_data_and_model(cfg)
    trainer = build_trainer(cfg)
    finder = Tuner(trainer).lr_find(model, datamodule=datamodule, update_attr=False, **cfg.lr_find)
    if finder is None:  # on a rank other than 0
        return {}
    suggestion = finder.suggestion()
    result = {
        "suggestion": suggestion,
        "lr": finder.results["lr"],
        "loss": finder.results["loss"],
        "command": train_command(suggestion),
    }
    figure = finder.plot(suggest=suggestion is not None)
    assert isinstance(figure, Figure)  # drawn on a pyplot figure of its own (`show=False`, no `ax` given)
    figure.axes[0].set_title(f"Learning-rate range test ({cfg.optimizer._target_.rsplit('.', 1)[-1]})")
    path = output_dir / "figures" / "lr_find.png"
    with replaced_atomically(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure("lr_find", figure, close=False)
    plt.close(figure)  # Lightning draws it with pyplot, which keeps every figure until it is closed
    write_json(output_dir / "lr_find.json", result)
    if suggestion is None:
        log.warning("No suggestion: the loss never fell steadily; widen lr_find.min_lr/max_lr. See %s", path)
    else:
        log.info(
            "Suggested learning rate: %.3g (figure: %s)\nTo train with it: %s",
            suggestion,
            path,
            result["command"],
        )
    return result


def train_command(lr: float | None) -> str:
    """`python train.py` with this command's overrides and the suggested `optimizer.lr`."""
    lr_override = [f"optimizer.lr={lr:.3g}"] if lr is not None else []
    return command_line("train.py", *lr_override, drop=("lr_find.", "optimizer.lr="))
