"""Checkpoints a run can be resumed from exactly: Lightning's `ModelCheckpoint`, plus the random number
generators and the best checkpoint so far; and where the run keeps `last.ckpt`."""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint

from mnist_logreg.files import replaced_atomically
from mnist_logreg.outputs import CHECKPOINTS, LAST

log = logging.getLogger(__name__)

OVERRIDES_KEY = "overrides"  # in each checkpoint: the overrides of the run that wrote it


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` plus what a resume needs that Lightning 2.6 leaves out.

    - The global RNG states (torch, CUDA, NumPy, Python) go into each checkpoint and come back on resume, so
      anything random during training (dropout, augmentation) continues the stream it would have drawn.
    - The run's overrides go into each checkpoint, so that a resume with other settings says which differ.
    - A run resumed into a new directory: Lightning then forgets the best score, and the next validation
      becomes "best" whatever its value. Here the best checkpoint is copied into the new directory with its
      score, so the resumed run tests the checkpoint that an uninterrupted run would have tested.

    `last.ckpt` after every validation comes from a second, plain `ModelCheckpoint` (callbacks/default.yaml):
    Lightning writes this one's `save_last` only when it also writes a new best.
    """

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_states": _rng_states()}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        # The run's command-line overrides, so that a resume with other settings can say which differ.
        checkpoint[OVERRIDES_KEY] = (
            list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        if "rng_states" in state:
            _set_rng_states(state.pop("rng_states"))
        saved_dir = state.get("dirpath")
        if saved_dir and self.dirpath and os.path.realpath(saved_dir) != self.dirpath:
            state = self._carry_best_over(state)
        super().load_state_dict(state)

    def _carry_best_over(self, state: dict[str, Any]) -> dict[str, Any]:
        """Copy the previous run's best checkpoints here and point the saved state at the copies."""
        old_paths = list(state.get("best_k_models") or {})
        missing = [p for p in old_paths if not Path(p).is_file()]
        if missing:
            log.warning("%s is gone: the best checkpoint is chosen afresh from this run on", missing[0])
            return state
        assert self.dirpath is not None  # called only when this callback has a directory of its own
        moved = {}
        for old in old_paths:
            new = Path(self.dirpath) / Path(old).name
            with replaced_atomically(new) as tmp:
                shutil.copyfile(old, tmp)
            moved[old] = str(new)
        return {
            **state,
            "dirpath": self.dirpath,
            "best_k_models": {moved[p]: score for p, score in state["best_k_models"].items()},
            "best_model_path": moved.get(state.get("best_model_path"), ""),
            "kth_best_model_path": moved.get(state.get("kth_best_model_path"), ""),
            "last_model_path": "",
        }


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the run keeps `last.ckpt`: beside the checkpoint callback's files, else in the run directory."""
    callback = trainer.checkpoint_callback
    directory = getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / CHECKPOINTS
    return Path(directory) / LAST


def _rng_states() -> dict[str, Any]:
    # Plain values and tensors only: checkpoints load with `torch.load(weights_only=True)`.
    state = np.random.get_state(legacy=True)
    assert isinstance(state, tuple)  # legacy=True: the tuple form, which `set_state` takes back
    kind, keys, pos, has_gauss, gauss = state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def _set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
