"""The run directory's contract: what a run writes where, the statuses its record holds, and the one way to
read and write that record (`metrics.json`).

The record is written last and atomically, so its presence and status say how the run ended. One rule for
every reader (the sweep summary, resume, the Optuna sweeper, the demo): a record that is missing, or that
cannot be read as a JSON object (cut short by a full disk, edited by hand), means an unfinished run; an
unreadable one is named in a warning, never a traceback."""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import Any

from mnist_logreg.errors import is_pruned
from mnist_logreg.files import write_json

log = logging.getLogger(__name__)

METRICS = "metrics.json"  # the run's record
CHECKPOINTS = "checkpoints"  # best.ckpt (the tested one) and last.ckpt (the latest state)
BEST = "best.ckpt"
LAST = "last.ckpt"
LOCK = ".lock"  # held by the process that writes the run (runs/run_lock.py)
HYDRA = ".hydra"  # Hydra's own: config.yaml (composed), overrides.yaml (as typed), hydra.yaml


class Status(str, Enum):
    """How a run ended, as its record says. Only `completed` is a finished result."""

    COMPLETED = "completed"
    FAILED = "failed"  # a sweep job that raised: the reason is in the record's `error`
    PRUNED = "pruned"  # a search trial stopped by its pruner, with its last value
    INTERRUPTED = "interrupted"  # a sweep job stopped by a signal, with the command that finishes it
    DEBUG = "debug"  # a `debug=<preset>` run (conf/debug/): a smoke test that ended normally, never a result

    def __str__(self) -> str:
        return self.value


def ended_by(exception: BaseException) -> Status:
    """The status of a run that `exception` ended: pruned (by its Optuna search), interrupted (Ctrl-C, or
    the SystemExit of SIGTERM: `StopOnInterrupt`) or failed."""
    if is_pruned(exception):
        return Status.PRUNED
    return Status.INTERRUPTED if isinstance(exception, (KeyboardInterrupt, SystemExit)) else Status.FAILED


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS


def last_checkpoint(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / LAST


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The run's record; `{}` for a run without a readable one (see the module's rule)."""
    path = metrics_path(run_dir)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        log.warning("%s cannot be read (%s): counted as an unfinished run", path, error)
        return {}
    if not isinstance(record, dict):
        log.warning("%s is not a run record (a JSON object): counted as an unfinished run", path)
        return {}
    return record


def status(run_dir: str | Path) -> str | None:
    """The recorded status (a `Status` value, or None without a readable record)."""
    value = read_record(run_dir).get("status")
    return str(value) if value is not None else None


def is_finished(run_dir: str | Path) -> bool:
    """Whether the run ended normally: its record is final (a result, or a debug preset's smoke test)."""
    return status(run_dir) in (Status.COMPLETED, Status.DEBUG)


def write_record(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Write the record whole or not at all (files.write_json), its status first."""
    write_json(metrics_path(run_dir), {key: _plain(value) for key, value in record.items()})


def write_status(
    run_dir: str | Path, status: Status, reason: str, metrics: dict[str, Any] | None = None
) -> None:
    """The record of a job that did not finish: its status and why, for the sweep summary."""
    write_record(run_dir, {"status": status, "error": reason, **(metrics or {})})


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Status) else value
