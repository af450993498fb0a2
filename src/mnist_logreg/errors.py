"""Errors a user can cause and fix: reported as one line that says what to do, not as a traceback."""

from __future__ import annotations

import errno
import importlib.util
import sys


class UserError(Exception):
    """A bad config value, a missing or corrupt file, a bad checkpoint path: the message names the fix."""


def require_extra(extra: str, *modules: str, needed_by: str = "this command") -> None:
    """Refuse what needs an optional extra that is not installed (before anything heavy is imported):
    `needed_by` (a command, `logger.mlflow`) needs `modules`, which `pip install -e ".[extra]"` brings."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    if missing:
        names = " and ".join(filter(None, [", ".join(missing[:-1]), missing[-1]]))
        which = "which is" if len(missing) == 1 else "which are"
        raise UserError(f'{needed_by} needs {names}, {which} not installed: pip install -e ".[{extra}]"')


def one_line(error: BaseException) -> str:
    """An exception's message on one line of at most 200 characters."""
    text = " ".join(str(error).split())
    return (text[:197] + "..." if len(text) > 200 else text) or type(error).__name__


# Writes that fail for a reason the user can fix: the disk or quota is full, or the place is not writable.
FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR)


def find_user_error(error: BaseException | None) -> UserError | None:
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


def is_pruned(error: BaseException) -> bool:
    """Optuna's `TrialPruned`: a job that its search stopped early, not a failure."""
    # Optuna not imported: nothing can have raised one (and importing it here would cost every failure).
    optuna = sys.modules.get("optuna")
    return optuna is not None and isinstance(error, optuna.TrialPruned)
