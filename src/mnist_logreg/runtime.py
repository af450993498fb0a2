"""Where this process runs: a Hydra job on its own or one job of a sweep, perhaps started by submitit; the run
directory it writes; the command that started it; the option picked in each config group; the trial of a
search it serves. Read from Hydra's and submitit's public state, so that every layer can ask without importing
the layer that started the run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_logreg.outputs import Status

# The config groups that each build one part of a run, a `_target_` node or null: the options a config check
# reads (runs/config.py), and the settings runs are compared by (tracking/hparams.py). `callbacks` and
# `logger` build several parts each, and `experiment` picks among these groups.
PARTS = ("data", "model", "optimizer", "scheduler", "trainer")


def in_multirun() -> bool:
    """Whether this process runs one job of a sweep (`-m`), rather than a single run."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def output_dir() -> Path:
    """This Hydra job's run directory."""
    return Path(HydraConfig.get().runtime.output_dir)


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


def group_choices() -> dict[str, str]:
    """`{"optimizer": "adam", "scheduler": "none", ...}`: the option Hydra picked for `experiment` and each
    of the `PARTS`, as far as they were picked from a group."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {group: str(choices[group]) for group in ("experiment", *PARTS) if choices.get(group) is not None}


def command_line(script: str, *added: str, drop: tuple[str, ...] = ()) -> str:
    """`python <script>` with this run's command-line overrides, less those starting with `drop` (and
    Hydra's own), plus `added`: a command to print that reruns this run with a change."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", *drop))]
    return " ".join(["python", script, *map(shlex.quote, kept), *added])


def resume_command(path: Path) -> str:
    """The command that finishes this run: its own overrides (a resume needs the settings it was trained
    with) and `ckpt_path=<path>`, in a new run directory. A run started with `ckpt_path=auto` is given its
    own command again, in its own directory, where `auto` finds `path`."""
    script = sys.argv[0] or "train.py"
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    if "ckpt_path=auto" in overrides and path.parent.parent == output_dir():
        return command_line(script, f"hydra.run.dir={shlex.quote(str(path.parent.parent))}")
    return command_line(script, f"ckpt_path={path}", drop=("ckpt_path=",))


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What says which run this was, beside its results: the seed, the fold that validated (k-fold
    cross-validation), and a search trial's study and number (`trial.*`, set by the Optuna sweeper). A pruned
    trial's record names them the same way. A `debug=<preset>` run (conf/debug/) is a smoke test: its status
    is `debug`, not `completed`, and it names its preset."""
    identity: dict[str, Any] = {"seed": cfg.get("seed")}
    debug = HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None
    if debug:
        identity = {"status": Status.DEBUG, "debug": str(debug), **identity}
    data = cfg.get("data")
    if data and data.get("folds") is not None:
        identity.update(folds=data.folds, fold=data.fold)
    trial = cfg.get("trial")
    if trial and trial.get("study_name") is not None:
        identity["study"] = trial.study_name
    if trial and trial.get("number") is not None:
        identity["trial"] = trial.number
    return identity
