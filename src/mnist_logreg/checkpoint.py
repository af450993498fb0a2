"""A trained model and its data settings, rebuilt from a checkpoint alone, or one clear error."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mnist_logreg.data import MNISTDataModule
from mnist_logreg.errors import UserError
from mnist_logreg.model import LogisticRegression

EXAMPLE = "logs/runs/<run>/checkpoints/best.ckpt"
REQUIRED_KEYS = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters")


class CheckpointError(UserError):
    """The checkpoint path is missing, unreadable, or not a checkpoint of this project's model."""


def load_checkpoint(
    ckpt_path: str | Path | None, data_dir: str | Path | None = None
) -> tuple[LogisticRegression, MNISTDataModule]:
    """The model (on the CPU, in eval mode) and the data module that trained it.

    `data_dir` replaces the directory recorded in the checkpoint, so that a checkpoint moved to another
    machine finds its data; any copy of MNIST gives the same numbers (the files are checked by MD5 sum).
    """
    if ckpt_path is None or str(ckpt_path) in ("", "???"):
        raise CheckpointError(f"ckpt_path is required: add ckpt_path={EXAMPLE}")
    path = Path(ckpt_path)
    if path.is_dir():
        raise CheckpointError(f"ckpt_path={path} is a directory: give a checkpoint file, e.g. {EXAMPLE}")
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path}: no such file (a training run writes {EXAMPLE})")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"ckpt_path={path} is not readable: permission denied")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises whatever its zip and unpickling layers raise
        reason = "truncated, or not a checkpoint file"
        if "Weights only load failed" in str(error):
            reason = "it holds objects that torch.load(weights_only=True) refuses to load"
        raise CheckpointError(
            f"ckpt_path={path} cannot be read as a checkpoint ({reason}); give a file that train.py wrote, "
            f"e.g. {EXAMPLE}"
        ) from None
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint] if isinstance(checkpoint, dict) else []
    if not isinstance(checkpoint, dict) or missing:
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint of train.py (it has no {', '.join(missing) or 'dict'}); "
            f"give a file that train.py wrote, e.g. {EXAMPLE}"
        )
    overrides = {"data_dir": str(data_dir)} if data_dir is not None else {}
    try:
        model = LogisticRegression.load_from_checkpoint(path, map_location="cpu")
        datamodule = MNISTDataModule.load_from_checkpoint(path, **overrides)
    except (RuntimeError, TypeError, KeyError, ValueError) as error:  # other shapes or arguments
        raise CheckpointError(
            f"ckpt_path={path} does not fit this project's model or data module ({one_line(error)})"
        ) from None
    return model.eval(), datamodule


def one_line(error: BaseException) -> str:
    """An exception's message on one line of at most 200 characters."""
    text = " ".join(str(error).split())
    return (text[:197] + "..." if len(text) > 200 else text) or type(error).__name__
