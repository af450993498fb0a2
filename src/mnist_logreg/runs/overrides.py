"""A command line's overrides: a misspelt key or group refused in one line that gives the right spelling,
and a resume in a run's own directory given that run's overrides (`with_run_overrides`).

Hydra refuses `optimizer.lrr=0.1` and `optimiser=adam` while it composes the config, before any task function
runs, with advice that fits a new key only ("To append to your config use +optimizer.lrr=0.1"). The entry
points call `check_overrides` first: it composes the config as Hydra will (the public compose API), and when
an override names a key the config lacks but one close to it exists, it says which and exits with status 2.
Anything else, a key that is really new among them, is left to Hydra and its own message.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

RUN_FLAGS = ("-m", "--multirun")  # the only flags that leave the composed config as it is
# Keys that moved: the deskew is the model's input transform now (a checkpoint is the whole classifier).
MOVED = {"data.deskew": "model.deskew"}


def check_overrides(config_dir: Path, config_name: str, args: list[str] | None = None) -> None:
    """Exit with one line and status 2 if an override misspells a key or group of the config."""
    args = sys.argv[1:] if args is None else args
    if any(arg.startswith("-") and arg not in RUN_FLAGS for arg in args):
        return  # --config-name, --config-dir, --cfg, ...: Hydra's checks alone
    overrides = [arg for arg in args if arg not in RUN_FLAGS]
    if overrides:
        message = misspelling(config_dir, config_name, overrides)
        if message:
            print(message, file=sys.stderr)
            sys.exit(2)


def misspelling(config_dir: Path, config_name: str, overrides: list[str]) -> str | None:
    """'<key> is not a key of the config: did you mean <override>?', or None if Hydra should answer."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None
    single = {override.input_line: one_value(override) for override in parsed}
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
        try:
            compose(config_name, [line for line in single.values() if line], return_hydra_config=True)
            return None
        except ConfigCompositionException as error:
            cause = error.__cause__
            if not isinstance(cause, (ConfigAttributeError, ConfigKeyError)) or not cause.full_key:
                return None
            missing = str(cause.full_key)  # `optimizer.lrr`, or `optimizr` of `optimizr.lr`
        except HydraException:  # a missing option, a bad sweep, ...: Hydra's own message says it
            return None
        wrong = next((o for o in parsed if f"{o.key_or_group}.".startswith(f"{missing}.")), None)
        if wrong is None or wrong.is_delete():
            return None
        if missing in MOVED:
            value = typed(wrong).split("=", 1)[-1]
            return f"{missing} is not a key of the config any more: use {MOVED[missing]}={value}"
        others = [line for input_line, line in single.items() if line and input_line != wrong.input_line]
        try:
            config = compose(config_name, others, return_hydra_config=True)
        except HydraException:
            return None
    return suggestion(config, missing, wrong)


def suggestion(config: DictConfig, missing: str, wrong: Override) -> str | None:
    """The override with the closest existing name in place of the missing one, if one is close."""
    parent, _, name = missing.rpartition(".")
    node = OmegaConf.select(config, parent) if parent else config
    if not isinstance(node, DictConfig):
        return None
    names = [str(key) for key in node]
    if not parent:  # a group chosen as null (`experiment`, `debug`) is not a key, but can be chosen
        names += [str(group) for group in config.hydra.runtime.choices if "/" not in str(group)]
    close = difflib.get_close_matches(name, names, n=1)
    if not close:
        return None
    right = f"{parent}.{close[0]}" if parent else close[0]
    key = right + wrong.key_or_group[len(missing) :]
    line = typed(wrong)
    value = line.split("=", 1)[1] if "=" in line else ""
    kind = "a key of the config" if parent else "a key or group of the config"
    return f"{missing} is not {kind}: did you mean {key}={value}?"


def typed(override: Override) -> str:
    """The override as it was typed: the parser keeps each one's line (only an Override built by hand lacks
    it)."""
    assert override.input_line is not None
    return override.input_line


def one_value(override: Override) -> str | None:
    """The override as a single run would see it: a sweep by its first value (an interval, by none)."""
    if not override.is_sweep_override():
        return override.input_line
    try:
        first = next(iter(override.sweep_string_iterator()))
    except Exception:
        return None
    return f"{override.get_key_element()}={first}"


def with_run_overrides(args: list[str]) -> list[str]:
    """The command line of a resume in a run's own directory (`hydra.run.dir=<run> ckpt_path=auto`, not a
    multirun), with that run's overrides (`<run>/.hydra/overrides.yaml`) put before those typed, which win.

    So the run continues with the settings it was started with, as they were typed: `python train.py
    hydra.run.dir=<run> ckpt_path=auto` finishes a stopped run, and `... trainer.max_epochs=20` takes a
    finished one further. Any other command line is returned as it is.
    """
    if "ckpt_path=auto" not in args or any(arg in RUN_FLAGS for arg in args):
        return args
    run_dir = next((arg.split("=", 1)[1] for arg in args if arg.startswith("hydra.run.dir=")), None)
    saved = Path(run_dir) / ".hydra" / "overrides.yaml" if run_dir else None
    if saved is None or not saved.is_file():
        return args
    typed = {override_key(arg) for arg in args}
    carried = [str(o) for o in OmegaConf.load(saved) if override_key(str(o)) not in typed]
    return [*carried, *args]


def override_key(override: str) -> str:
    """`optimizer.lr` of `optimizer.lr=0.1`, `+trainer.limit_train_batches=5` or `~callbacks.figures`."""
    return override.split("=", 1)[0].lstrip("+~")
