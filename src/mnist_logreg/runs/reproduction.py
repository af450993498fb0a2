"""`reproduce.py`: run a recorded run again in a new directory, from its own overrides, and compare every
number its `metrics.json` recorded with the new run's."""

from __future__ import annotations

import logging
import math
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, TypeGuard

from omegaconf import DictConfig, OmegaConf

from mnist_logreg.errors import UserError
from mnist_logreg.outputs import HYDRA, METRICS, is_finished, read_record
from mnist_logreg.tracking.provenance import provenance_differences

log = logging.getLogger(__name__)

# Not results: wall times vary from run to run, the checkpoint's path names the run directory, and the
# provenance is compared apart (it says why numbers may differ).
NOT_COMPARED = ("fit_time_s", "test_time_s", "ckpt_path", "provenance")
# A search trial's ties to its study: run again alone, it reports to no study (a completed trial was never
# pruned, so the pruning callback changed nothing in it).
TRIAL_OVERRIDES = ("trial.", "callbacks.optuna_pruning")


def reproduce(cfg: DictConfig, scripts_dir: Path) -> bool:
    """Run `cfg.run` again into `cfg.paths.output_dir` with the entry point that made it (train.py,
    eval.py) and its recorded overrides (or take `cfg.again`, a run made already); log each recorded metric
    that differs by more than `cfg.tolerance`, and what differs in the provenance. True when every recorded
    metric matches."""
    run_dir = Path(cfg.run)
    recorded = finished_record(run_dir)
    if cfg.get("again"):
        output_dir = Path(cfg.again)
        finished_record(output_dir)
    else:
        output_dir = Path(cfg.paths.output_dir)
        if not run_again(run_dir, output_dir, scripts_dir):
            return False
    rerun = finished_record(output_dir)
    differ = differences(recorded, rerun, float(cfg.tolerance))
    changed = provenance_differences(recorded.get("provenance") or {}, rerun.get("provenance") or {})
    if not recorded.get("provenance"):
        changed.insert(0, "the recorded run has no provenance")
    within = "exactly" if cfg.tolerance == 0 else f"within tolerance {cfg.tolerance}"
    compared = [key for key in recorded if key not in NOT_COMPARED]
    if differ:
        log.error(
            "Not reproduced (%s): %d of %d recorded values differ", output_dir, len(differ), len(compared)
        )
        for line in differ:
            log.error("  %s", line)
    else:
        log.info("reproduced %s: %s (%s)", within, ", ".join(compared), output_dir)
    if changed:
        log.log(
            logging.ERROR if differ else logging.INFO, "what differs in provenance: %s", "; ".join(changed)
        )
    return not differ


def run_again(run_dir: Path, output_dir: Path, scripts_dir: Path) -> bool:
    """Start the run recorded in `run_dir` again, into `output_dir`: whether it finished."""
    hydra = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra
    overrides = [
        str(o)
        for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")
        if not _key(o).startswith(TRIAL_OVERRIDES)
    ]
    script = scripts_dir / f"{hydra.job.name}.py"
    command = [sys.executable, str(script), *overrides, f"hydra.run.dir={output_dir}"]
    # Where it was started: relative paths in its overrides (a checkpoint, the data) mean what they meant.
    launch_dir = Path(str(hydra.runtime.cwd))
    cwd = launch_dir if launch_dir.is_dir() else Path.cwd()
    log.info("Running %s again: %s", run_dir, shlex.join(["python", *command[1:]]))
    result = subprocess.run(command, cwd=cwd)
    if result.returncode != 0 or not is_finished(output_dir):
        log.error("The run again failed (exit status %d): see %s", result.returncode, output_dir)
        return False
    return True


def finished_record(run_dir: Path) -> dict[str, Any]:
    """A finished run's `metrics.json`; refused in one line if `run_dir` holds none, or no overrides."""
    if not (run_dir / HYDRA / "overrides.yaml").is_file():
        raise UserError(
            f"{run_dir} is no run directory (no .hydra/overrides.yaml): give run=<a run's directory>"
        )
    record = read_record(run_dir)
    if not record:
        raise UserError(f"{run_dir} holds no finished run (no readable {METRICS}): nothing to compare")
    if not is_finished(run_dir):
        raise UserError(f"{run_dir} did not finish (status {record.get('status')}): nothing to compare")
    return record


def differences(recorded: dict[str, Any], rerun: dict[str, Any], tolerance: float = 0.0) -> list[str]:
    """Each recorded value (times, paths and provenance aside) that the new run does not match: numbers
    within `tolerance` of each other match, anything else must be equal."""
    lines = []
    for key, old in recorded.items():
        if key in NOT_COMPARED:
            continue
        new = rerun.get(key)
        if _number(old) and _number(new):
            both_nan = math.isnan(old) and math.isnan(new)
            if both_nan or abs(old - new) <= tolerance:
                continue
            lines.append(f"{key}: recorded {old!r}, now {new!r} (difference {new - old:+.6g})")
        elif old != new:
            lines.append(f"{key}: recorded {old!r}, now {new!r}")
    return lines


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _key(override: Any) -> str:
    return str(override).split("=", 1)[0].lstrip("+~")
