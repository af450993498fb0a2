"""One writer per run directory: a second process started on a directory that a live one is writing (a
requeued job whose first instance still runs, two terminals with `ckpt_path=auto`) is refused. And one run:
a new run into a directory that holds a finished one is refused before anything is written there
(`OneRunPerDirectory`).

The lock is the kernel's (`flock` on `<run dir>/.lock`), so it ends with the process that holds it, however
that process ends: a run killed with SIGKILL leaves the file behind, but not the lock, and its resume starts.
The file holds the holder's pid, for the message. (`filelock.UnixFileLock` takes the same lock, but empties
the file before it tries, so a refused process would erase the pid it is about to report.)
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from mnist_logreg.errors import UserError
from mnist_logreg.outputs import CHECKPOINTS, LOCK, METRICS, is_finished, status

# The target of Hydra's `hydra/sweeper: basic`, as the config names it (a string: no import of Hydra's code).
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class RunDirectoryInUse(UserError):
    """Another live process writes this run directory."""


@contextmanager
def run_directory_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold `run_dir` for this process until the block ends (or the process does); raise
    `RunDirectoryInUse`, naming the holder's pid, if another process holds it.

    Under DDP, rank 0 holds it for the run: the other ranks (started by Lightning, `torchrun` or SLURM, in
    the same directory) take nothing."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:  # type: ignore[attr-defined]  # set on the function by Lightning
        yield
        return
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise RunDirectoryInUse(
                f"{run_dir} is in use by process {holder}: wait for it to end (or stop it), or give this run "
                "a directory of its own (hydra.run.dir=...)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays, so that no two processes lock different files


class OneRunPerDirectory(HydraCallback):
    """Refuse a run into a directory that holds a finished run (a `metrics.json` whose status is
    completed, or debug), unless it continues that run from its own checkpoint (`ckpt_path=auto`, or a
    checkpoint in its `checkpoints/`): one line naming both ways on, exit status 2. And a sweep of Hydra's
    basic sweeper into a sweep directory that holds finished jobs: its jobs would be written over them.

    A Hydra callback (conf/hydra/default.yaml) at the start of a single run or a sweep, before Hydra writes
    the run's `.hydra/` files and log: the finished records stay as they were, byte for byte. The Optuna
    sweeper is let through: its workers share a sweep directory and each trial gets a new one in it.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(str(config.hydra.run.dir))
        message = refusal(run_dir, config.get("ckpt_path"), str(config.hydra.job.name))
        if message:
            print(message, file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if str(config.hydra.sweeper.get("_target_")) != BASIC_SWEEPER:
            return
        message = sweep_refusal(Path(str(config.hydra.sweep.dir)))
        if message:
            print(message, file=sys.stderr)
            sys.exit(2)


def refusal(run_dir: Path, ckpt_path: str | None, job: str) -> str | None:
    """Why a new run cannot go into `run_dir`, in one line; None if it can."""
    if not is_finished(run_dir):
        return None  # none yet, or failed, interrupted or pruned: the directory is there to be run again
    own = run_dir / CHECKPOINTS
    if job == "train" and (
        ckpt_path == "auto" or (ckpt_path and Path(ckpt_path).parent.resolve() == own.resolve())
    ):
        return None
    if job == "train":
        ways = (
            f"continue it with `python train.py hydra.run.dir={run_dir} ckpt_path=auto` (and a larger "
            "trainer.max_epochs), or train afresh in a new directory (leave out hydra.run.dir)"
        )
    else:
        ways = "give this run a new directory (leave out hydra.run.dir)"
    return f"{run_dir} holds a finished run ({status(run_dir)}, {METRICS}), kept as it is: {ways}"


def sweep_refusal(sweep_dir: Path) -> str | None:
    """Why a new sweep cannot go into `sweep_dir`, in one line: the finished jobs it holds; None if it can."""
    finished = sorted(job.name for job in sweep_dir.glob("*") if job.is_dir() and is_finished(job))
    if not finished:
        return None
    jobs_held = f"{len(finished)} finished job{'s' if len(finished) > 1 else ''}, {finished[0]} first"
    return (
        f"{sweep_dir} holds a finished sweep ({jobs_held}), kept as it is: sweep into a new directory "
        "(leave out hydra.sweep.dir)"
    )
