"""The config as a tree, as a run prints it at its start; a Hydra callback that prints a sweep's once."""

from __future__ import annotations

import io
import logging
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)


def config_tree(cfg: DictConfig, resolve: bool = True) -> str:
    """The composed config, resolved, as a tree: a branch per group (and per logger and callback), its
    settings in YAML. Plain text (rich draws it without colour), so that train.log holds it as shown."""
    from rich.console import Console
    from rich.tree import Tree

    tree = Tree("config")
    for key, value in cfg.items_ex(resolve=resolve):
        _add_branch(tree, str(key), value, resolve)
    text = io.StringIO()
    console = Console(file=text, width=1000, color_system=None)
    console.print(tree)
    return "\n".join(line.rstrip() for line in text.getvalue().splitlines())


def _add_branch(tree: Any, key: str, value: Any, resolve: bool) -> None:
    entries = value.items_ex(resolve=False) if isinstance(value, DictConfig) else ()
    if entries and all(isinstance(entry, DictConfig) for _, entry in entries):
        branch = tree.add(key)  # `logger`, `callbacks`: a branch per entry
        for name, entry in value.items_ex(resolve=resolve):
            _add_branch(branch, str(name), entry, resolve)
    elif isinstance(value, (DictConfig, ListConfig)) and len(value):
        tree.add(key).add(OmegaConf.to_yaml(value, resolve=resolve).rstrip())
    else:
        tree.add(OmegaConf.to_yaml({key: value}).rstrip())


class ConfigTreeOnce(HydraCallback):
    """At the start of a sweep, the composed config as a tree, once; a job then prints no tree of its own
    (the launcher shows its overrides). Unresolved: what refers to a job's directory differs per job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: object) -> None:
        task = OmegaConf.masked_copy(config, [str(key) for key in config if key != "hydra"])
        log.info("Config (each job adds its own overrides):\n%s", config_tree(task, resolve=False))
