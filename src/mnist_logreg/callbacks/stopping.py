"""How training ends early: a diverged loss (the run failed), or Ctrl-C or SIGTERM (saved, resumable)."""

from __future__ import annotations

import logging
import math
import signal
import threading
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from mnist_logreg.errors import UserError, in_multirun, record_status
from mnist_logreg.resume import last_checkpoint_path, resume_command

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


class StopOnInterrupt(Callback):
    """Ctrl-C or SIGTERM ends training after the current step, with `last.ckpt` saved there.

    Lightning alone turns Ctrl-C into a KeyboardInterrupt wherever it lands (mid optimizer step, say) and
    saves nothing; on SIGTERM (a cluster's time limit or preemption, `docker stop`, `kill`) it stops at once,
    mid-validation too, saves nothing and exits with status 0, as if the run had succeeded. Here either
    signal is noted and acted on when the current training step (and a validation under way) ends: a
    checkpoint that an uninterrupted run could have written (so a run resumed from it ends with the same
    numbers), one line with the command that resumes it, and the exit Lightning gives an interrupted fit
    (status 1) for Ctrl-C, 143 (128 + SIGTERM) for SIGTERM. No metrics.json is written; a sweep job's says
    `interrupted`. A second Ctrl-C stops at once. Under DDP every rank stops at the first step at which any
    rank has seen the signal.
    """

    def __init__(self) -> None:
        self._signal: str | None = None
        self._previous_handlers: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._signal = None
        # Only the main thread may set handlers, and a process started to ignore SIGINT (`cmd &` in a script)
        # keeps ignoring it. This replaces Lightning's SIGTERM handler for the fit; Lightning puts back the
        # handlers it found when the fit ends.
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) not in (signal.SIG_IGN, None):
                self._previous_handlers[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self._signal = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self._restore_handlers()  # a second signal acts at once
        log.warning("%s: stopping after this step with a checkpoint", self._signal)

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

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        # A SIGTERM before training started reached Lightning's handler, which sets `received_sigterm`.
        name = self._signal or ("SIGTERM" if trainer.received_sigterm else None)
        terminated = name == "SIGTERM"
        requested = name is not None
        if trainer.world_size > 1:  # ranks see a signal at different steps: stop together at the first
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
            terminated = trainer.strategy.reduce_boolean_decision(terminated, all=False)
            name = name or ("SIGTERM" if terminated else "Ctrl-C")
        if not requested:
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)  # the whole training state, to resume from
        command = resume_command(path)
        log.error(
            "%s: stopped at step %d and saved %s; to finish the run: %s",
            name,
            trainer.global_step,
            path,
            command,
        )
        if trainer.is_global_zero and in_multirun():
            record_status(
                "interrupted", f"{name} at step {trainer.global_step}; to finish the job: {command}"
            )
        if terminated:
            raise SystemExit(SIGTERM_EXIT)
        raise KeyboardInterrupt

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}
