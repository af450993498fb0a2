"""Errors a user can cause and fix: reported as one line that says what to do, not as a traceback."""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib.util
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.hparams import write_missing_rows
from mnist_logreg.records import write_json

log = logging.getLogger(__name__)

T = TypeVar("T")


class UserError(Exception):
    """A bad config value, a missing or corrupt file, a bad checkpoint path: the message names the fix."""


def require_extra(extra: str, *modules: str) -> None:
    """Refuse a command whose optional packages are not installed, before it imports anything heavy."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        names = " and ".join(filter(None, [", ".join(missing[:-1]), missing[-1]]))
        which = "which is" if len(missing) == 1 else "which are"
        raise UserError(f'this command needs {names}, {which} not installed: pip install -e ".[{extra}]"')


def report_user_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T | None]:
    """Wrap a Hydra task so that a `UserError` ends a single run with its message and exit status 2, and
    without the run directory if the refusal came before the run wrote anything there.

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
                record_row(cfg, "pruned", getattr(error, "metrics", {}))
                record_status("pruned", one_line(error), {**getattr(error, "metrics", {}), **names})
                return None
            user_error = find_user_error(error)
            if not in_multirun():
                if user_error is None:
                    raise
                log.error("%s", user_error)
                with contextlib.suppress(OSError):  # the refusal is the message, whatever happens here
                    remove_unused_run_dir()
                sys.exit(2)
            if user_error is None:
                log.exception("The job failed:")
            else:
                log.error("%s", user_error)
            record_row(cfg, "failed")
            record_failure(user_error or error)
            return None

    return wrapper


def remove_unused_run_dir() -> None:
    """Remove the run directory if it holds only what Hydra writes before the task starts (`.hydra/` and the
    log) and train.py's lock file: otherwise a refused command leaves a directory that looks like a run. Its
    parents go too while they are empty, up to the launch directory (`logs/export/` after a first export
    that was refused)."""
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    expected: set[Path] = set()
    if hydra.output_subdir:
        subdir = run_dir / hydra.output_subdir
        expected = {subdir, *(subdir / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml"))}
    log_file = OmegaConf.select(
        hydra.job_logging, "handlers.file.filename", throw_on_resolution_failure=False
    )
    if log_file:
        expected.add(Path(log_file))
    from mnist_logreg.run_lock import LOCK_FILE  # here: run_lock raises this module's errors

    expected.add(run_dir / LOCK_FILE)  # train.py's hold on the directory, released by now
    if not run_dir.is_dir() or not set(run_dir.rglob("*")) <= expected:
        return
    for path in sorted(expected, reverse=True):  # a directory's files before the directory
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
    launch_dir = Path(hydra.runtime.cwd)
    directory = run_dir
    while directory == run_dir or launch_dir in directory.parents:
        try:
            directory.rmdir()
        except OSError:  # not empty: another run's, or the user's
            break
        directory = directory.parent


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


def record_row(cfg: DictConfig, status: str, metrics: dict[str, Any] | None = None) -> None:
    """The job's row in TensorBoard's HParams table, where the run itself wrote none (it ended before its
    trainer existed): a sweep's table has a row for every job."""
    try:
        write_missing_rows(cfg, status, metrics)
    except Exception as error:  # a view of the job: never the reason its own record goes unwritten
        log.warning("No HParams row for this job: %s", one_line(error))


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
