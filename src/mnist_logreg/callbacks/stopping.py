"""How training ends early: a diverged loss (the run failed), or a signal (Ctrl-C, SIGTERM, a requeue): saved,
resumable."""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_logreg.callbacks.checkpoint import last_checkpoint_path
from mnist_logreg.errors import UserError, one_line
from mnist_logreg.outputs import Status, write_status
from mnist_logreg.runtime import in_multirun, in_submitit_job, output_dir, resume_command

log = logging.getLogger(__name__)


class DivergenceError(UserError):
    """The training loss became NaN or infinite."""


class StopOnDivergence(Callback):
    """Fails the run at the first non-finite training loss, before its step spreads it to the weights.

    Lightning's `EarlyStopping(check_finite=True)` looks only at epoch ends and then ends the fit as if it had
    finished, so the run would go on to write a metrics.json. Checking every step costs one device sync per
    step on a GPU.
    """

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        finite = math.isfinite(loss.item())  # one number: cheaper in Python than as a tensor operation
        if trainer.world_size > 1:  # every rank must stop at the same step, or the others wait forever
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else "?"
        raise DivergenceError(
            f"Training diverged: the loss is {loss.item()} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}) with learning rate {lr}; lower optimizer.lr and run again."
        )


# The exit status of a process ended by SIGTERM, as a shell reports it: 128 + the signal's number.
SIGTERM_EXIT = 128 + signal.SIGTERM

Handler = Callable[[int, FrameType | None], Any]


class StopOnInterrupt(Callback):
    """Ctrl-C, SIGTERM or submitit's requeue signal ends training after the current step, with `last.ckpt`
    saved there.

    Lightning alone turns Ctrl-C into a KeyboardInterrupt wherever it lands (mid optimizer step, say) and
    saves nothing; on SIGTERM (a cluster's time limit or preemption, `docker stop`, `kill`) it stops at once,
    mid-validation too, saves nothing and exits with status 0, as if the run had succeeded. Here the signal
    is noted and acted on when the current training step (and a validation under way) ends, with a checkpoint
    that an uninterrupted run could have written, so a run resumed from it ends with the same numbers:

    - Ctrl-C and SIGTERM: one line with the command that resumes the run, and the exit Lightning gives an
      interrupted fit (status 1) for Ctrl-C, 143 (128 + SIGTERM) for SIGTERM. No metrics.json is written; a
      sweep job's says `interrupted`. A second Ctrl-C stops at once.
    - In a submitit job, the signal submitit requeues on (USR2: SLURM sends it `signal_delay_s` before the
      time limit, and at a preemption where the cluster allows): the checkpoint, then submitit's own handler,
      which requeues the job. The job runs again in its own directory and continues from this `last.ckpt`
      (`resume.resolve_ckpt_path`), instead of from the last validation's.

    SLURM may send SIGTERM and USR2 together: the most pressing signal wins (a requeue, then SIGTERM, then
    Ctrl-C). Under DDP every rank stops at the first step at which any rank has seen a signal.
    """

    def __init__(self) -> None:
        self._signum: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._requeue: tuple[int, Handler] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signum = None
        # Only the main thread may set handlers, and a process started to ignore SIGINT (`cmd &` in a script)
        # keeps ignoring it. This replaces Lightning's SIGTERM handler for the fit; Lightning puts back the
        # handlers it found when the fit ends.
        if threading.current_thread() is not threading.main_thread():
            return
        self._requeue = submitit_requeue_handler()
        for signum in self._handled():
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                self._previous_handlers[signum] = signal.signal(signum, self._request_stop)

    def _handled(self) -> list[int]:
        return [signal.SIGINT, signal.SIGTERM, *([self._requeue[0]] if self._requeue else [])]

    def _by_priority(self) -> list[int | None]:
        """None (no signal) and the signals handled, least pressing first."""
        return [None, *self._handled()]

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        priority = self._by_priority().index
        if priority(signum) > priority(self._signum):
            self._signum = signum
        # The same signal again acts at once (a second Ctrl-C); another one still waits for the step's end.
        previous = self._previous_handlers.pop(signum, None)
        if previous is not None:
            signal.signal(signum, previous)
        log.warning("%s: stopping after this step with a checkpoint", signal_name(signum))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._stop_if_requested(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        self._stop_if_requested(trainer)  # a signal during the last validation: the run is not tested

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()
        if isinstance(exception, SIGTERMException):
            self._stopped_by_lightning(trainer, exception)

    @staticmethod
    def _stopped_by_lightning(trainer: L.Trainer, exception: SIGTERMException) -> None:
        """SIGTERM where no step ends to act on it (before training, during testing): Lightning raises
        `SIGTERMException`, a `SystemExit` that would end the process with status 0, as if the run had
        succeeded. It ends with 143 instead, and one line with the command that finishes the run."""
        command = resume_command(last_checkpoint_path(trainer))
        stage = "testing" if trainer.testing else "training"
        if trainer.is_global_zero:
            log.error(
                "SIGTERM during %s: stopped without metrics.json; to finish the run: %s", stage, command
            )
        StopOnInterrupt._record_interrupted(trainer, f"SIGTERM during {stage}; to finish the job: {command}")
        exception.code = SIGTERM_EXIT

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        # A SIGTERM before training started reached Lightning's handler, which sets `received_sigterm`.
        signum = self._signum or (signal.SIGTERM if trainer.received_sigterm else None)
        if trainer.world_size > 1:
            signum = self._agreed_signal(trainer, signum)
        if signum is None:
            return
        self._signum = None
        name = signal_name(signum)
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the whole training state, to resume from
        command = resume_command(path)
        if self._requeue is not None and signum == self._requeue[0]:
            self._hand_over_to_submitit(trainer, path, command)  # does not return
        if trainer.is_global_zero:  # one line for the run, not one per process
            log.error(
                "%s: stopped at step %d and saved %s; to finish the run: %s",
                name,
                trainer.global_step,
                path,
                command,
            )
        self._record_interrupted(
            trainer, f"{name} at step {trainer.global_step}; to finish the job: {command}"
        )
        if signum == signal.SIGTERM:
            raise SystemExit(SIGTERM_EXIT)
        raise KeyboardInterrupt

    def _agreed_signal(self, trainer: L.Trainer, signum: int | None) -> int | None:
        """The signal every rank acts on. Ranks see a signal at different steps, or only one rank gets it: all
        stop at the first step at which any has seen one, and the most pressing one wins (one all-reduce)."""
        by_priority = self._by_priority()
        index = torch.tensor(by_priority.index(signum), device=trainer.strategy.root_device)
        return by_priority[int(trainer.strategy.reduce(index, reduce_op="max"))]

    def _hand_over_to_submitit(self, trainer: L.Trainer, path: Path, command: str) -> NoReturn:
        """On rank 0, submitit's handler requeues the job and ends the process, or raises when it will not
        requeue (the job has used up its `max_num_timeout` requeues). On the other ranks it does nothing: they
        end here, instead of waiting in the next step for a rank 0 that is gone."""
        assert self._requeue is not None
        signum, handler = self._requeue
        name, step = signal_name(signum), trainer.global_step
        if trainer.is_global_zero:
            log.warning(
                "%s: saved %s at step %d; submitit requeues this job, which continues from there",
                name,
                path,
                step,
            )
        self._record_interrupted(trainer, f"{name} at step {step}: requeued by submitit; by hand: {command}")
        try:
            handler(signum, None)
        except Exception as error:  # a sweep job ends as failed, with the command that finishes it
            raise UserError(
                f"{name}: submitit did not requeue the job ({one_line(error)}); to finish the run: {command}"
            ) from error
        raise UserError(f"{name}: rank {trainer.global_rank} stops at step {step}; rank 0 requeues the job")

    @staticmethod
    def _record_interrupted(trainer: L.Trainer, reason: str) -> None:
        if trainer.is_global_zero and in_multirun():
            write_status(output_dir(), Status.INTERRUPTED, reason)

    def _restore_handlers(self) -> None:
        while self._previous_handlers:  # popped one by one: a signal handled meanwhile pops its own
            signum, handler = self._previous_handlers.popitem()
            signal.signal(signum, handler)


def submitit_requeue_handler() -> tuple[int, Handler] | None:
    """In a submitit job, the signal submitit requeues on (USR2, or the one SUBMITIT_PREEMPT_SIGNAL names)
    and submitit's handler of it; else None. A SIGTERM handler is Lightning's by now, wrapping submitit's:
    a job told to requeue on TERM is treated as SIGTERM (saved, exit 143)."""
    if not in_submitit_job():
        return None
    from submitit.core.job_environment import SignalHandler

    signum = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if signum is None:
        return None
    handler = signal.getsignal(signum)
    if callable(handler) and isinstance(getattr(handler, "__self__", None), SignalHandler):
        return signum, handler
    return None


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
