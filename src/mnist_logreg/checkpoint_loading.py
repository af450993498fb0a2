"""Reading a `ckpt_path`: the model and data rebuilt from it, or a resume checked, or one clear error."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mnist_logreg.data import MNISTDataModule
from mnist_logreg.errors import UserError, one_line
from mnist_logreg.model import LogisticRegression

BEST = "logs/runs/<run>/checkpoints/best.ckpt"
LAST = "logs/runs/<run>/checkpoints/last.ckpt"
# A resumed run must see the same data in the same order as the run it continues.
RESUME_DATA_KEYS = ("batch_size", "val_size", "split_seed", "shuffle_seed", "deskew")


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


def check_resume(
    path: str | os.PathLike,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    optimizer: torch.optim.Optimizer,
    max_epochs: int | None = None,
) -> None:
    """Refuse a `ckpt_path` that cannot be resumed, or that would silently continue a different run.

    `optimizer` is one built from this run's config: Lightning restores the optimizer's saved state, learning
    rate included, so a different optimizer or setting in the config would be ignored without a word.
    """
    checkpoint = read_checkpoint(path, ("state_dict", "loops", "optimizer_states"), LAST)
    epoch = checkpoint.get("epoch", 0)
    if max_epochs not in (None, -1) and epoch > max_epochs:
        raise CheckpointError(
            f"ckpt_path={path} stopped in epoch {epoch}, past this run's trainer.max_epochs={max_epochs}: "
            "pass the trainer.max_epochs the run was started with."
        )
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    found = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    if expected != found:
        name = next(n for n in sorted(expected.keys() | found.keys()) if expected.get(n) != found.get(n))
        raise CheckpointError(
            f"ckpt_path={path} does not fit this model: {name} is {expected.get(name)} here and "
            f"{found.get(name)} in the checkpoint; resume with the model settings it was trained with."
        )

    saved_data = checkpoint.get("datamodule_hyper_parameters") or {}
    current_data = getattr(datamodule, "hparams", {})
    for key in RESUME_DATA_KEYS:
        if key in saved_data and key in current_data and saved_data[key] != current_data[key]:
            note = " (it follows `seed`)" if key == "shuffle_seed" else ""
            raise CheckpointError(
                f"ckpt_path={path} was trained with data.{key}={saved_data[key]}{note}, this run has "
                f"{current_data[key]}: resume with the checkpoint's value, "
                "or start a new run without ckpt_path."
            )

    saved_groups = [g for state in checkpoint["optimizer_states"] for g in state.get("param_groups", [])]
    if saved_groups:
        saved = {key: _plain(value) for key, value in saved_groups[0].items() if key != "params"}
        current = {key: _plain(value) for key, value in optimizer.param_groups[0].items() if key != "params"}
        kind = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
        if saved.keys() != current.keys():
            other = sorted(saved.keys() ^ current.keys())[0]
            raise CheckpointError(
                f"ckpt_path={path} was trained with another optimizer than this run's {kind} (the setting "
                f"{other} is in one and not the other): resume with the checkpoint's optimizer, "
                "or start a new run without ckpt_path."
            )
        for key in sorted(saved):
            if saved[key] != current[key]:
                raise CheckpointError(
                    f"ckpt_path={path} was trained with optimizer.{key}={saved[key]}, this run has "
                    f"{current[key]}: a resumed run keeps the checkpoint's optimizer settings; pass "
                    f"optimizer.{key}={saved[key]}, or start a new run without ckpt_path."
                )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
