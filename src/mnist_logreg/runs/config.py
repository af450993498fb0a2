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
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from mnist_logreg.errors import UserError, one_line
from mnist_logreg.runtime import PARTS


class ConfigError(UserError):
    """A config value that cannot work: a wrong type, a number out of range, an option its target lacks."""


def check_config(cfg: DictConfig) -> torch.optim.Optimizer:
    """Refuse bad values before any data is read: seed, learning rate, unknown options, optimizer values.

    Returns the optimizer built to check its values (on a dummy parameter): a resume checks the checkpoint's
    optimizer settings against it (`resume.check_resume`), so the config builds one optimizer before `fit`.
    """
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
        return instantiate(cfg.optimizer)([torch.zeros(1, requires_grad=True)])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"optimizer: {one_line(error)} (refused by {cfg.optimizer._target_}).") from None


def check_parts(cfg: DictConfig) -> None:
    """The options of every part the config builds: data, model, optimizer, scheduler, trainer, callbacks,
    loggers."""
    nodes = {key: cfg.get(key) for key in PARTS}
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
    parameters: Mapping[str, inspect.Parameter]
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the target judge its options
        parameters = {}
    takes_any = not parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    allowed = [name for name in parameters if name not in ("self", "params", "args", "kwargs")]
    hints = _type_hints(target)
    for option in map(str, node):
        if option.startswith("_"):
            continue
        if not takes_any and option not in parameters:
            close = difflib.get_close_matches(str(option), allowed, n=1)
            hint = f"did you mean {key}.{close[0]}?" if close else f"its options are {', '.join(allowed)}."
            raise ConfigError(f"{key}.{option}={node[option]!s} is not an option of {node._target_}: {hint}")
        if OmegaConf.is_missing(node, option):  # `???` in its yaml file: the user must give it
            raise ConfigError(
                f"{key}.{option} has no value: give one on the command line, {key}.{option}=..."
            )
        value = node.get(option)
        if value is None and OmegaConf.is_interpolation(node, option):
            continue  # taken from the data when the part is built (a network's size: assembly.build_model)
        if option in hints and not _fits(value, hints[option]):
            expected = _describe(hints[option])
            raise ConfigError(f"{key}.{option}={value!r} is invalid: {node._target_} takes {expected} there.")
        check_options(f"{key}.{option}", value)


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
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            raise ConfigError(f"{key}: {one_line(cause)}") from None
        raise


def _type_hints(target: Any) -> dict[str, Any]:
    """The target's argument annotations, resolved; none where they cannot be (then nothing is checked)."""
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        return {}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value can be an argument of this annotation. Only plain values are judged: a nested
    `_target_` node, an object or a type the check does not know passes, and the target has the last word."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, arm) for arm in args)
    if origin is Literal:
        return value in args
    if hint is type(None):
        return value is None
    if isinstance(value, DictConfig) and "_target_" in value:
        return True
    plain = {bool: _is_bool, int: _is_int, float: _is_number, str: lambda v: isinstance(v, str)}
    if hint in plain:
        return plain[hint](value)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (ListConfig, list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, (DictConfig, dict))
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        literals = [a for arm in args if typing.get_origin(arm) is Literal for a in typing.get_args(arm)]
        others = [_describe(arm) for arm in args if typing.get_origin(arm) is not Literal]
        if "a number" in others and "a whole number" in others:  # an int is a number
            others.remove("a whole number")
        if literals:
            others.insert(0, "one of " + ", ".join(dict.fromkeys(map(str, literals))))
        return " or ".join(dict.fromkeys(others))
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    names = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        type(None): "null",
    }
    if hint in names:
        return names[hint]
    if origin in (list, tuple) or hint in (list, tuple):
        return "a list"
    return getattr(hint, "__name__", str(hint))


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
