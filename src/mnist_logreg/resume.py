"""Continuing a run: what a checkpoint must hold to resume exactly, and the checks before a resume starts.

A resumed run ends with the numbers of a run never stopped: the data order is drawn from the seed and the
epoch (`data.EpochOrder`), the batches already trained on are skipped (`data.TensorBatches`), Lightning
restores the model, optimizer, scheduler, loops and callbacks, and `ResumableCheckpoint` adds the random
number generators and the best checkpoint so far.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from mnist_logreg.checkpoints import LAST, CheckpointError, read_checkpoint
from mnist_logreg.console import command_line
from mnist_logreg.model import upgrade_checkpoint
from mnist_logreg.records import replaced_atomically

log = logging.getLogger(__name__)

# A resumed run must see the same data in the same order, through the same input transform, as the run it
# continues.
RESUME_DATA_KEYS = ("batch_size", "val_size", "split_seed", "shuffle_seed")
OVERRIDES_KEY = "overrides"  # in each checkpoint: the overrides of the run that wrote it


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint` plus what a resume needs that Lightning 2.6 leaves out.

    - The global RNG states (torch, CUDA, NumPy, Python) go into each checkpoint and come back on resume, so
      anything random during training (dropout, augmentation) continues the stream it would have drawn.
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


def check_resume(
    path: str | os.PathLike,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    optimizer: torch.optim.Optimizer,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """The checkpoint at `path`, read once; refused if it cannot be resumed, or would silently continue a
    different run.

    `optimizer` is one built from this run's config: Lightning restores the optimizer's saved state, learning
    rate included, so a different optimizer or setting in the config would be ignored without a word.
    """
    checkpoint = read_checkpoint(path, ("state_dict", "loops", "optimizer_states"), LAST)
    upgrade_checkpoint(checkpoint)
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

    saved_deskew = bool(checkpoint.get("hyper_parameters", {}).get("deskew", False))
    if saved_deskew != bool(model.hparams.get("deskew", False)):
        raise CheckpointError(
            f"ckpt_path={path} was trained with model.deskew={str(saved_deskew).lower()}, this run has "
            f"{str(not saved_deskew).lower()}: resume with the checkpoint's value, or start a new run "
            "without ckpt_path."
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
    return checkpoint


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resume_point(
    cfg: DictConfig, model: L.LightningModule, datamodule: L.LightningDataModule
) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint this run starts from and its contents, checked against this run's config
    (`check_resume`); `(None, None)` for a fresh start."""
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if not ckpt_path:
        return None, None
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    checkpoint = check_resume(ckpt_path, model, datamodule, optimizer, cfg.trainer.get("max_epochs"))
    note_other_settings(ckpt_path, checkpoint.get(OVERRIDES_KEY), cfg.paths.output_dir)
    return ckpt_path, checkpoint


def note_other_settings(ckpt_path: str, saved: list[str] | None, output_dir: str | Path) -> None:
    """One line when this run's overrides differ from those of the run that wrote the checkpoint (settings
    that cannot differ, `check_resume` has refused already): a resume that drops the run's own overrides
    (`trainer.max_epochs`, say) would otherwise end somewhere else without a word."""
    if saved is None or not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    ignored = {"ckpt_path", *hydra.job.config.override_dirname.exclude_keys}  # where a run goes, not what

    def settings(overrides: list[str]) -> dict[str, str]:
        pairs = (str(o).lstrip("+~").partition("=") for o in overrides)
        return {k: v for k, _, v in pairs if k not in ignored and not k.startswith(("hydra.", "paths."))}

    theirs, ours = settings(saved), settings(list(hydra.overrides.task))
    differ = [key for key in dict.fromkeys([*theirs, *ours]) if theirs.get(key) != ours.get(key)]
    if not differ:
        return
    shown = ", ".join(
        f"{key}={ours.get(key, '(default)')} (the run had {theirs.get(key, 'the default')})"
        for key in differ[:3]
    )
    more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
    run_dir = Path(ckpt_path).resolve().parent.parent
    if run_dir == Path(output_dir).resolve():
        log.warning("Continuing this run with other settings than it had: %s%s", shown, more)
    else:
        log.warning(
            "Resuming with other settings than the run that wrote %s: %s%s; `python train.py "
            "hydra.run.dir=%s ckpt_path=auto` resumes it with its own, in its own directory",
            ckpt_path,
            shown,
            more,
            run_dir,
        )


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """The checkpoint this run starts from (None: a fresh start).

    `ckpt_path=auto`: this run directory's `checkpoints/last.ckpt` if an earlier attempt left one (a run
    started again with the same `hydra.run.dir`), else a fresh start.

    A submitit job (`hydra/launcher=slurm` or `submitit_local`) whose directory holds a `last.ckpt` and no
    finished metrics.json ran before and was stopped: SLURM or submitit started it again after a time limit,
    a preemption or a node failure. It continues from there, whatever `ckpt_path` says (a job resumed from
    another run's checkpoint has moved on since). A new sweep's job, or a finished one run again in the same
    directory, starts as `ckpt_path` says. Lightning does the same on SLURM with its own requeue checkpoint.
    """
    last = Path(output_dir) / "checkpoints" / "last.ckpt"
    if in_submitit_job() and last.is_file() and not _finished(Path(output_dir)):
        log.info("This submitit job was stopped before: continuing from %s", last)
        resolved: str | None = str(last)
    elif ckpt_path != "auto":
        resolved = ckpt_path or None
    elif last.is_file():
        log.info("ckpt_path=auto: resuming from %s", last)
        resolved = str(last)
    else:
        log.info("ckpt_path=auto: no %s yet, starting afresh", last)
        resolved = None
    if resolved and Path(resolved).resolve().parent == last.parent.resolve():
        # Resumed in its own directory, whose checkpoints Lightning would warn about as if they were strays.
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    return resolved


def in_submitit_job() -> bool:
    """Whether this process runs a job that submitit submitted, by submitit's own `JobEnvironment`.

    A submitit job is run by submitit, so submitit is imported already; a run that has not imported it is
    no submitit job, and is spared the import."""
    if "submitit" not in sys.modules:
        return False
    import submitit

    try:
        submitit.JobEnvironment()
    except RuntimeError:  # "Could not figure out which environment the job is running in"
        return False
    return True


def _finished(output_dir: Path) -> bool:
    try:
        return json.loads((output_dir / "metrics.json").read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def resume_command(path: Path) -> str:
    """The command that finishes this run: its own overrides (a resume needs the settings it was trained
    with) and `ckpt_path=<path>`, in a new run directory. A run started with `ckpt_path=auto` is given its
    own command again, in its own directory, where `auto` finds `path`."""
    script = sys.argv[0] or "train.py"
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    if "ckpt_path=auto" in overrides and path.parent.parent == Path(HydraConfig.get().runtime.output_dir):
        return command_line(script, f"hydra.run.dir={shlex.quote(str(path.parent.parent))}")
    return command_line(script, f"ckpt_path={path}", drop=("ckpt_path=",))


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the run keeps `last.ckpt`: beside the checkpoint callback's files, else in the run directory."""
    callback = trainer.checkpoint_callback
    directory = getattr(callback, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
    return Path(directory) / "last.ckpt"


def _rng_states() -> dict[str, Any]:
    # Plain values and tensors only: checkpoints load with `torch.load(weights_only=True)`.
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
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
