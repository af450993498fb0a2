"""The job guard around every entry point's Hydra task: a `UserError` ends a single run in one line (exit
status 2, and no run directory left that looks like a run); a failing sweep job is recorded, and the sweep
goes on."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.errors import UserError, find_user_error, is_pruned, one_line
from mnist_logreg.outputs import LOCK, Status, write_status
from mnist_logreg.runtime import in_multirun, output_dir, run_identity
from mnist_logreg.tracking.hparams import write_missing_rows
from mnist_logreg.tracking.provenance import record_provenance

log = logging.getLogger(__name__)

T = TypeVar("T")


def report_user_errors(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T | None]:
    """Wrap a Hydra task so that a `UserError` ends a single run with its message and exit status 2, and
    without the run directory if the refusal came before the run wrote anything there.

    In a multirun a failing job, whatever the error, is recorded in its `metrics.json` as failed, with the
    reason, and returns None instead of raising. Hydra's launchers stop a sweep on the first job that
    raises, before the end-of-sweep callbacks run; this way every job runs, the sweep summary lists the
    failed ones, and the summary (`sweeps/summary.py`) gives the sweep a non-zero exit status. A job that an
    Optuna search pruned is no failure: it is recorded as pruned, with its last value and its trial.
    """

    @functools.wraps(task)
    def wrapper(cfg: DictConfig) -> T | None:
        try:
            return task(cfg)
        except Exception as error:
            if in_multirun() and is_pruned(error):
                log.info("%s", error)
                record_row(cfg, Status.PRUNED, getattr(error, "metrics", {}))
                metrics = {**getattr(error, "metrics", {}), **run_identity(cfg), **what_made_it()}
                record_status(Status.PRUNED, one_line(error), metrics)
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
            record_row(cfg, Status.FAILED)
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
    job_logging = cast(DictConfig, hydra.job_logging)  # typed as a dict, a DictConfig once composed
    log_file = OmegaConf.select(job_logging, "handlers.file.filename", throw_on_resolution_failure=False)
    if log_file:
        expected.add(Path(log_file))
    expected.add(run_dir / LOCK)  # train.py's hold on the directory, released by now
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


def record_row(cfg: DictConfig, status: Status, metrics: dict[str, Any] | None = None) -> None:
    """The job's row in TensorBoard's HParams table, where the run itself wrote none (it ended before its
    trainer existed): a sweep's table has a row for every job."""
    try:
        write_missing_rows(cfg, status, metrics)
    except Exception as error:  # a view of the job: never the reason its own record goes unwritten
        log.warning("No HParams row for this job: %s", one_line(error))


def what_made_it() -> dict[str, Any]:
    """The provenance of a job that did not finish, as a finished one records it, so that the sweep summary
    compares every job's code; none where it cannot be had (the record's reason matters more)."""
    try:
        return {"provenance": record_provenance(output_dir())}
    except Exception as error:
        log.warning("No provenance for this job: %s", one_line(error))
        return {}


def record_failure(error: Exception) -> None:
    """Write this job's `metrics.json` with status failed and the reason in one line."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if not isinstance(error, UserError):
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    record_status(Status.FAILED, reason, what_made_it())


def record_status(status: Status, reason: str, metrics: dict[str, Any] | None = None) -> None:
    """A sweep job's `metrics.json` for a job that did not finish: its status and why, for the sweep summary.

    Written whole or not at all, like a finished run's: only `status: completed` means finished. Under DDP
    rank 0 writes it, as it writes a finished run's.
    """
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # type: ignore[attr-defined]  # set on the function by Lightning
        return
    write_status(output_dir(), status, reason, metrics)
