"""Checkpoint files: written whole or not at all, read as plain data, turned back into model and data."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from mnist_logreg.data import MNISTDataModule
from mnist_logreg.errors import UserError, one_line
from mnist_logreg.model import LogisticRegression
from mnist_logreg.records import replaced_atomically

BEST = "logs/runs/<run>/checkpoints/best.ckpt"
LAST = "logs/runs/<run>/checkpoints/last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it, then renames it into place.

    A kill during the write leaves the previous `last.ckpt` whole. Lightning's own writer stages the bytes in
    the system temp directory and `shutil.move`s them: a plain, interruptible copy whenever /tmp is on another
    filesystem than the run directory (tmpfs, a cluster's scratch disk).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's writer knows it
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with replaced_atomically(Path(path)) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint


class CheckpointError(UserError):
    """`ckpt_path` is missing or unreadable, or belongs to a different model, data or optimizer setup."""


def read_checkpoint(ckpt_path: str | os.PathLike | None, required: tuple[str, ...], example: str) -> dict:
    """The checkpoint's contents, read as plain data (`weights_only=True`), or one `CheckpointError` line.

    `required` names the keys the caller needs; `example` is the path shown in the messages.
    """
    if ckpt_path is None or str(ckpt_path) in ("", "???"):
        raise CheckpointError(f"ckpt_path is required: add ckpt_path={example}")
    path = Path(ckpt_path)
    if path.is_dir():
        raise CheckpointError(f"ckpt_path={path} is a directory: give a checkpoint file, such as {example}")
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path} does not exist: give a checkpoint file, such as {example}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"ckpt_path={path} is not readable: permission denied")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises whatever its zip and unpickling layers raise
        reason = "truncated, or not a checkpoint file"
        # torch.save writes zip archives; only a whole one can hold objects that weights_only refuses.
        if zipfile.is_zipfile(path) and "Weights only load failed" in str(error):
            reason = "it holds pickled objects, which this project's checkpoints never do"
        raise CheckpointError(
            f"ckpt_path={path} is not a readable checkpoint ({reason}): give a file that train.py wrote, "
            f"such as {example}"
        ) from None
    missing = [key for key in required if key not in checkpoint] if isinstance(checkpoint, dict) else []
    if not isinstance(checkpoint, dict) or missing:
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint written by train.py (it has no "
            f"{', '.join(missing) or 'dict'}): give a file that train.py wrote, such as {example}"
        )
    return checkpoint


def load_checkpoint(
    ckpt_path: str | Path | None, data_dir: str | Path | None = None
) -> tuple[LogisticRegression, MNISTDataModule]:
    """The model (on the CPU, in eval mode) and the data module that trained it.

    `data_dir` replaces the directory recorded in the checkpoint, so that a checkpoint moved to another
    machine finds its data; any copy of MNIST gives the same numbers (the files are checked by MD5 sum).
    """
    read_checkpoint(ckpt_path, ("state_dict", "hyper_parameters", "datamodule_hyper_parameters"), BEST)
    overrides = {"data_dir": str(data_dir)} if data_dir is not None else {}
    try:
        model = LogisticRegression.load_from_checkpoint(ckpt_path, map_location="cpu")
        datamodule = MNISTDataModule.load_from_checkpoint(ckpt_path, **overrides)
    except (RuntimeError, TypeError, KeyError, ValueError) as error:  # other shapes or arguments
        raise CheckpointError(
            f"ckpt_path={ckpt_path} does not fit this project's model or data module ({one_line(error)})"
        ) from None
    return model.eval(), datamodule


def load_classifier(ckpt_path: str | Path | None) -> torch.nn.Module:
    """The checkpoint's model behind the transform its data module applied to every image it trained on
    (deskewing, with `data.deskew=true`): an image made into an MNIST image is then read as those were."""
    model, datamodule = load_checkpoint(ckpt_path)
    return torch.nn.Sequential(datamodule.transform(), model).eval()
