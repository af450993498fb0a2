"""Continuing a run: what a checkpoint must hold to resume exactly, and the checks before a resume starts.

A resumed run ends with the numbers of a run never stopped: the data order is drawn from the seed and the
epoch (`data.EpochOrder`), the batches already trained on are skipped (`data.TensorBatches`), Lightning
restores the model, optimizer, scheduler, loops and callbacks, and `ResumableCheckpoint`
(callbacks/checkpoint.py) adds the random number generators and the best checkpoint so far.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_logreg.callbacks.checkpoint import OVERRIDES_KEY
from mnist_logreg.core.checkpoints import EXAMPLE_LAST, CheckpointError, read_checkpoint
from mnist_logreg.core.model import upgrade_checkpoint
from mnist_logreg.outputs import is_finished, last_checkpoint
from mnist_logreg.runtime import in_submitit_job

log = logging.getLogger(__name__)

# A resumed run must see the same data in the same order, through the same input transform, as the run it
# continues.
RESUME_DATA_KEYS = ("batch_size", "val_size", "split_seed", "shuffle_seed", "folds", "fold")


def check_resume(
    path: str | os.PathLike,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    optimizer: torch.optim.Optimizer,
    max_epochs: int | None = None,
) -> dict[str, Any]:
    """The checkpoint at `path`, read once; refused if it cannot be resumed, or would silently continue a
    different run.

    `optimizer` is one built from this run's config (for its settings; its parameters do not matter):
    Lightning restores the optimizer's saved state, learning rate included, so a different optimizer or
    setting in the config would be ignored without a word.
    """
    checkpoint = read_checkpoint(path, ("state_dict", "loops", "optimizer_states"), EXAMPLE_LAST)
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

    saved_names = checkpoint["hyper_parameters"].get("class_names")
    if saved_names is not None and list(saved_names) != list(model.hparams.get("class_names", [])):
        raise CheckpointError(
            f"ckpt_path={path} was trained on other classes ({', '.join(saved_names[:5])}"
            f"{', ...' if len(saved_names) > 5 else ''}): resume with the data it was trained on (data=...), "
            "or start a new run without ckpt_path."
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
    cfg: DictConfig,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    optimizer: torch.optim.Optimizer,
) -> tuple[str | None, dict[str, Any] | None]:
    """The checkpoint this run starts from and its contents, checked against this run's config
    (`check_resume`; `optimizer`: the one `config.check_config` built from it); `(None, None)` for a fresh
    start."""
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if not ckpt_path:
        return None, None
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
    last = last_checkpoint(output_dir)
    if in_submitit_job() and last.is_file() and not is_finished(output_dir):
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
