"""A run's record in TensorBoard's HParams tab: the flattened config and the final validation/test scores.

The record is its own run, `tensorboard/hparams/`, holding the session (the hyperparameters) and one point
each of `val/acc` and `test/acc`: the values in `metrics.json`. TensorBoard shows a session's metric as the
last value of that tag in the session's run, which in the training run itself would be the last epoch's
`val/acc`, not the best checkpoint's. No experiment summary is written, so TensorBoard takes the union of
every job's hyperparameters: a sweep over `optimizer=sgd,adam` still shows `optimizer/momentum`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from torch.utils.tensorboard import SummaryWriter

HPARAMS_METRICS = ("val/acc", "test/acc")

HParamValue = bool | int | float | str


def log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Write the HParams record beside the run's TensorBoard scalars (if it has a TensorBoard logger)."""
    logger = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
    if logger is None:
        return
    with SummaryWriter(str(Path(logger.log_dir) / "hparams")) as writer:
        writer.file_writer.add_summary(hparams_pb(flatten_config(cfg)), trainer.global_step)
        for name in HPARAMS_METRICS:
            if name in metrics:
                writer.add_scalar(name, metrics[name], trainer.global_step)


def flatten_config(cfg: DictConfig) -> dict[str, HParamValue]:
    """`{"optimizer/lr": 0.01, ...}`: the resolved config without the settings that say where, not how, a
    run trained (those set from `paths` or Hydra's runtime: every job of a sweep differs in them).

    Nulls are left out and lists written as text: HParams holds numbers, strings and booleans only.
    """
    raw = _flatten(OmegaConf.to_container(cfg, resolve=False))
    resolved = _flatten(OmegaConf.to_container(cfg, resolve=True))
    flat: dict[str, HParamValue] = {}
    for key, value in resolved.items():
        if value is None or (isinstance(raw[key], str) and re.search(r"\$\{(paths\.|hydra:)", raw[key])):
            continue
        flat[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
