"""What a run is compared by, in TensorBoard's HParams tab and in MLflow: its settings, flattened."""

from __future__ import annotations

import re
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# What a person compares runs by: the settings of these groups, and these keys.
HPARAMS_GROUPS = ("data", "model", "optimizer", "scheduler", "trainer")
HPARAMS_KEYS = ("seed", "tags")
# The option chosen in these config groups (`optimizer=adam`), where Hydra has it.
CHOICES = ("experiment", "data", "model", "optimizer", "scheduler", "trainer")

HParamValue = bool | int | float | str


def hyperparameters(cfg: DictConfig) -> dict[str, HParamValue]:
    """The settings that make two runs train differently: the option chosen in each group (`optimizer:
    sgd`), the values of the data, model, optimizer, scheduler and trainer settings, the seed and the tags.

    Not the class paths (`_target_`: the group's option names them), nor the callbacks, loggers and paths.
    """
    kept = {
        key: value
        for key, value in flatten_config(cfg).items()
        if (key.split("/")[0] in HPARAMS_GROUPS or key in HPARAMS_KEYS)
        and not key.split("/")[-1].startswith("_")  # `_target_`, `_partial_`
        and not key.endswith("_dir")  # a data directory given as a path: where, not how
    }
    kept.pop("trainer/plugins", None)  # how checkpoints are written, not how the model trains
    kept["tags"] = ", ".join(map(str, cfg.get("tags") or []))
    return {**group_choices(), **kept}


def flatten_config(cfg: DictConfig) -> dict[str, HParamValue]:
    """`{"optimizer/lr": 0.01, ...}`: the resolved config without the settings that say where, not how, a
    run trained (`paths`, and those set from them or from Hydra's runtime: each job of a sweep has its own).

    Nulls are left out and lists written as text: HParams holds numbers, strings and booleans only.
    """
    raw = _flatten(OmegaConf.to_container(cfg, resolve=False))
    resolved = _flatten(OmegaConf.to_container(cfg, resolve=True))
    flat: dict[str, HParamValue] = {}
    for key, value in resolved.items():
        where = key.startswith("paths/") or (
            isinstance(raw[key], str) and re.search(r"\$\{(paths\.|hydra:)", raw[key])
        )
        if value is None or where:
            continue
        flat[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def group_choices() -> dict[str, str]:
    """`{"optimizer": "adam", "scheduler": "none", ...}`: the option picked in each group of `CHOICES`."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in CHOICES if choices.get(group) is not None}


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
