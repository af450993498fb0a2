"""Errors a user can cause and fix: reported as one line that says what to do, not as a traceback."""

from __future__ import annotations

import errno
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_logreg.records import write_json

log = logging.getLogger(__name__)

T = TypeVar("T")


class UserError(Exception):
    """A bad config value, a missing or corrupt file, a bad checkpoint path: the message names the fix."""


def report_user_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T | None]:
    """Wrap a Hydra task so that a `UserError` ends a single run with its message and exit status 2.

    In a multirun a failing job, whatever the error, is recorded in its `metrics.json` as failed, with the
    reason, and returns None instead of raising. Hydra's launchers stop a sweep on the first job that
    raises, before the end-of-sweep callbacks run; this way every job runs, the sweep summary lists the
    failed ones, and the summary (`mnist_logreg.sweep`) gives the sweep a non-zero exit status. A job that
    an Optuna search pruned is no failure: it is recorded as pruned, with its last value.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T | None:
        try:
            return task(cfg)
        except Exception as error:
            if in_multirun() and is_pruned(error):
                log.info("%s", error)
                trial = cfg.get("trial") or {}  # the search's trial, as a completed run names it
                names = {"study": trial.get("study_name"), "trial": trial.get("number")}
                record_status("pruned", one_line(error), {**getattr(error, "metrics", {}), **names})
                return None
            user_error = find_user_error(error)
            if not in_multirun():
                if user_error is None:
                    raise
                log.error("%s", user_error)
                sys.exit(2)
            if user_error is None:
                log.exception("The job failed:")
            else:
                log.error("%s", user_error)
            record_failure(user_error or error)
            return None

    return wrapper


def one_line(error: BaseException) -> str:
    """An exception's message on one line of at most 200 characters."""
    text = " ".join(str(error).split())
    return (text[:197] + "..." if len(text) > 200 else text) or type(error).__name__


# Writes that fail for a reason the user can fix: the disk or quota is full, or the place is not writable.
FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)


def find_user_error(error: BaseException) -> UserError | None:
    """The `UserError` behind `error`: Hydra's `instantiate` wraps what a constructor raises in its own.

    A failed write (a full disk, a read-only directory) is one too: the fix is the user's.
    """
    while error is not None:
        if isinstance(error, UserError):
            return error
        if isinstance(error, OSError) and error.errno in FULL + NOT_WRITABLE:
            return write_error(error)
        error = error.__cause__
    return None


def write_error(error: OSError) -> UserError:
    where = f"{error.filename}" if error.filename else "a result file"
    if error.errno in FULL:
        fix = "free space there, or point hydra.run.dir (and paths.data_dir) at a disk with room"
    else:
        fix = "point hydra.run.dir at a directory you can write to"
    return UserError(f"Cannot write {where}: {error.strerror}. The run stopped without metrics.json; {fix}.")


def record_failure(error: Exception) -> None:
    """Write this job's `metrics.json` with status failed and the reason in one line."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not isinstance(error, UserError):
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    record_status("failed", reason)


def is_pruned(error: BaseException) -> bool:
    """Optuna's `TrialPruned`: a job that its search stopped early, not a failure."""
    # Optuna not imported: nothing can have raised one (and importing it here would cost every failure).
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)


def record_status(status: str, reason: str, metrics: dict[str, Any] | None = None) -> None:
    """A sweep job's `metrics.json` for a job that did not finish: its status and why, for the sweep summary.

    Written whole or not at all, like a finished run's: only `status: completed` means finished. Under DDP
    rank 0 writes it, as it writes a finished run's.
    """
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    write_json(
        Path(HydraConfig.get().runtime.output_dir) / "metrics.json",
        {"status": status, "error": reason, **(metrics or {})},
    )


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
