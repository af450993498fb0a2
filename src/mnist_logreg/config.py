"""Config checks before anything is built or trained: one line naming the key, the value and what is allowed.

Each swappable part is a `_target_` node whose valid options are the target's own arguments, so those are read
from its signature rather than repeated here in a schema that would drift from torch and Lightning. A mistyped
existing key (`optimizer.lrr=...`) is refused by Hydra itself; a mistyped added one (`+trainer.max_epoch=...`)
and values outside what a part accepts are refused here.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig

from mnist_logreg.errors import UserError, one_line

BUILT_NODES = (
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
)  # plus every entry of `callbacks` and `logger`


class ConfigError(UserError):
    """A config value that cannot work: a wrong type, a number out of range, an option its target lacks."""


def check_config(cfg: DictConfig) -> None:
    """Refuse bad values before any data is read: seed, learning rate, unknown options, optimizer values."""
    seed = cfg.get("seed")
    if not _is_int(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed={seed!r} is invalid: it must be a whole number from 0 to 2**32 - 1.")
    lr = cfg.optimizer.get("lr")
    if not _is_number(lr) or not math.isfinite(lr) or lr <= 0:
        raise ConfigError(f"optimizer.lr={lr!r} is invalid: it must be a positive number, such as 0.001.")

    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={cfg.trainer.accelerator} but torch finds no GPU on this machine: use "
            "trainer.accelerator=auto (a GPU when there is one) or trainer.accelerator=cpu."
        )

    check_parts(cfg)

    # The optimizer is a partial that torch first sees inside `fit`; one built on a dummy parameter now makes
    # torch check its values (momentum, betas, ...) before the data is loaded.
    try:
        instantiate(cfg.optimizer)([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optimizer: {one_line(error)} (refused by {cfg.optimizer._target_}).") from None


def check_parts(cfg: DictConfig) -> None:
    """The options of every part the config builds: data, model, optimizer, scheduler, trainer, callbacks,
    loggers."""
    nodes = {key: cfg.get(key) for key in BUILT_NODES}
    for group in ("callbacks", "logger"):
        nodes.update({f"{group}.{name}": node for name, node in (cfg.get(group) or {}).items()})
    for key, node in nodes.items():
        check_options(key, node)


def check_options(key: str, node: Any) -> None:
    """Every option of a `_target_` node, and of the nodes nested in it, must be an argument of its target."""
    if isinstance(node, ListConfig):
        for index, item in enumerate(node):
            check_options(f"{key}[{index}]", item)
        return
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        target = get_object(node._target_)
    except Exception:
        raise ConfigError(f"{key}._target_={node._target_} cannot be imported: check its spelling.") from None
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the target judge its options
        parameters = {}
    takes_any = not parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    allowed = [name for name in parameters if name not in ("self", "params", "args", "kwargs")]
    for option in node:
        if str(option).startswith("_"):
            continue
        if not takes_any and option not in parameters:
            close = difflib.get_close_matches(str(option), allowed, n=1)
            hint = f"did you mean {key}.{close[0]}?" if close else f"its options are {', '.join(allowed)}."
            raise ConfigError(f"{key}.{option}={node[option]} is not an option of {node._target_}: {hint}")
        check_options(f"{key}.{option}", node.get(option))


def build(key: str, node: DictConfig, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate`, with a value its target refuses reported in one line that names `key`.

    Hydra wraps whatever the target raises in an `InstantiationException`; a `UserError` (the data module's
    own checks) is unwrapped, and the value errors of torch and Lightning are given the key they came from.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, (ValueError, MisconfigurationException)):
            raise ConfigError(f"{key}: {one_line(cause)}") from None
        raise


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
