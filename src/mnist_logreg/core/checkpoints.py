"""Checkpoint files: written whole or not at all, read as plain data, turned back into the classifier."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from mnist_logreg.core.model import LogisticRegression
from mnist_logreg.errors import UserError, one_line
from mnist_logreg.files import replaced_atomically

# Where train.py keeps its checkpoints, for the messages that ask for one.
EXAMPLE_BEST = "logs/runs/<run>/checkpoints/best.ckpt"
EXAMPLE_LAST = "logs/runs/<run>/checkpoints/last.ckpt"


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


def _existing_file(ckpt_path: str | os.PathLike | None, example: str) -> Path:
    if ckpt_path is None or str(ckpt_path) in ("", "???"):
        raise CheckpointError(f"ckpt_path is required: add ckpt_path={example}")
    path = Path(ckpt_path)
    if path.is_dir():
        raise CheckpointError(f"ckpt_path={path} is a directory: give a checkpoint file, such as {example}")
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={path} does not exist: give a checkpoint file, such as {example}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"ckpt_path={path} is not readable: permission denied")
    return path


def _unreadable(path: Path, error: BaseException, example: str = EXAMPLE_BEST) -> CheckpointError:
    reason = "truncated, or not a checkpoint file"
    # torch.save writes zip archives; only a whole one can hold objects that weights_only refuses.
    if zipfile.is_zipfile(path) and "Weights only load failed" in str(error):
        reason = "it holds pickled objects, which this project's checkpoints never do"
    return CheckpointError(
        f"ckpt_path={path} is not a readable checkpoint ({reason}): give a file that train.py wrote, "
        f"such as {example}"
    )


def read_checkpoint(ckpt_path: str | os.PathLike | None, required: tuple[str, ...], example: str) -> dict:
    """The checkpoint's contents, read as plain data (`weights_only=True`), or one `CheckpointError` line.

    `required` names the keys the caller needs; `example` is the path shown in the messages.
    """
    path = _existing_file(ckpt_path, example)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises whatever its zip and unpickling layers raise
        raise _unreadable(path, error, example) from None
    missing = [key for key in required if key not in checkpoint] if isinstance(checkpoint, dict) else []
    if not isinstance(checkpoint, dict) or missing:
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint written by train.py (it has no "
            f"{', '.join(missing) or 'dict'}): give a file that train.py wrote, such as {example}"
        )
    return checkpoint


def load_model(ckpt_path: str | os.PathLike | None) -> LogisticRegression:
    """The checkpoint's classifier, input transform included, on the CPU and in eval mode: the file is read
    once, by Lightning's `load_from_checkpoint`, as plain data (`weights_only=True`).

    Anything that is not a checkpoint of this model is refused in one `CheckpointError` line.
    """
    path = _existing_file(ckpt_path, EXAMPLE_BEST)
    try:
        model = LogisticRegression.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except KeyError as error:  # a dict without Lightning's keys
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint written by train.py (it has no {error.args[0]}): give a "
            f"file that train.py wrote, such as {EXAMPLE_BEST}"
        ) from None
    except (RuntimeError, TypeError, ValueError) as error:  # another shape, or another model's arguments
        if not zipfile.is_zipfile(path) or "Weights only load failed" in str(error):
            raise _unreadable(path, error) from None
        raise CheckpointError(
            f"ckpt_path={path} does not fit this project's model ({one_line(error)})"
        ) from None
    except Exception as error:  # torch.load raises whatever its zip and unpickling layers raise
        raise _unreadable(path, error) from None
    return model.eval()
