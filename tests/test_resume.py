"""Same seed, same numbers; a run killed or interrupted, then resumed, ends exactly like one never stopped."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import UncompletedJobError

from helpers import ROOT
from mnist_logreg.errors import UserError
from mnist_logreg.runs.resume import resolve_ckpt_path
from mnist_logreg.runs.training import train

# The checkpoint's path names the run directory; the provenance, the command.
WALL_TIMES = ("fit_time_s", "test_time_s", "ckpt_path", "provenance")
# 500 training images in batches of 50: 10 steps an epoch, a validation (and checkpoints) every 5 steps.
TINY = (
    "data.val_size=100",
    "data.batch_size=50",
    "optimizer.lr=0.05",
    "trainer.max_epochs=3",
    "+trainer.val_check_interval=5",
    "trainer.accelerator=cpu",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
)


class Crash(Exception):
    pass


class CrashAt(L.Callback):
    """Dies at the start of a step the way a killed process does: nothing more is written."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Crash


class CtrlCAt(CrashAt):
    """Sends this process a real SIGINT during a step."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


class TermAt(CrashAt):
    """Sends this process a real SIGTERM during a step, as `kill`, `docker stop` or SLURM would."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class Usr2At(CrashAt):
    """Sends this process SIGUSR2 during a step, as SLURM does before a submitit job's time limit."""

    signals = (signal.SIGUSR2,)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            for signum in self.signals:
                os.kill(os.getpid(), signum)


class TermAndUsr2At(Usr2At):
    """SIGTERM and USR2 in one step, as SLURM sends them at a preemption that it signals to the job."""

    signals = (signal.SIGTERM, signal.SIGUSR2)


class Usr2AndTermAt(Usr2At):
    signals = (signal.SIGUSR2, signal.SIGTERM)


class Submitit(SignalHandler):
    """Stands in for submitit's handler in one of its jobs, on USR2: it checkpoints the job's submission and
    requeues it, then ends the process (a local job ends with status 3), or raises when it will not
    requeue. It notes the step of the `last.ckpt` it finds when it is called."""

    def __init__(self, last: Path, requeues: bool) -> None:
        self.last, self.requeues, self.saw_step = last, requeues, None

    def checkpoint_and_try_requeue(self, signum: int, frame: Any = None) -> None:
        if self.last.exists():
            self.saw_step = torch.load(self.last, weights_only=True)["global_step"]
        if not self.requeues:
            raise UncompletedJobError("Job not requeued because: timed-out too many times.")
        sys.exit(3)


@pytest.fixture
def submitit_job(monkeypatch: pytest.MonkeyPatch):
    """This process as a submitit job, with `handler` on USR2 as submitit sets it."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGUSR2, signal.SIGTERM)}
    yield lambda handler: signal.signal(signal.SIGUSR2, handler)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def numbers(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metrics.items() if key not in WALL_TIMES}


def train_accuracies(run: Path) -> dict[int, str]:
    """The train/acc the CSV logger recorded for each epoch."""
    with (run / "csv" / "version_0" / "metrics.csv").open() as f:
        return {int(row["epoch"]): row["train/acc"] for row in csv.DictReader(f) if row["train/acc"]}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def run_tiny(compose_train, tiny_mnist: Path, tmp_path: Path):
    def _run(name: str, *overrides: str) -> dict[str, Any]:
        out = f"paths.output_dir={tmp_path / name}"
        return train(compose_train(f"paths.data_dir={tiny_mnist}", out, *TINY, *overrides))

    return _run


@pytest.mark.slow
def test_same_seed_same_numbers_other_seed_other_numbers(run_tiny, tmp_path: Path) -> None:
    a, b, c = run_tiny("a", "seed=3"), run_tiny("b", "seed=3"), run_tiny("c", "seed=4")
    assert numbers(a) == numbers(b)
    assert same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    assert a["test/loss"] != c["test/loss"]
    assert not same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "c"))


INTERRUPTIONS = [
    ("CrashAt", 12, 10),  # killed after the checkpoint at the end of epoch 0
    ("CrashAt", 17, 15),  # killed after a checkpoint in the middle of epoch 1
    ("CtrlCAt", 7, 8),  # Ctrl-C in epoch 0: saved at the end of the step it landed in
    ("TermAt", 13, 14),  # SIGTERM in epoch 1: the same
]


@pytest.mark.slow
def test_a_resumed_run_ends_like_an_uninterrupted_one(
    run_tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture, sigint_handled
) -> None:
    whole = run_tiny("whole")
    for stopper, step, saved_at in INTERRUPTIONS:
        name = f"{stopper}-{step}"
        with pytest.raises(Crash if stopper == "CrashAt" else SystemExit) as stopped:
            run_tiny(name, f"+callbacks.stop._target_=test_resume.{stopper}", f"+callbacks.stop.step={step}")
        if stopper == "CtrlCAt":
            assert stopped.value.code == 1 and f"Ctrl-C: stopped at step {saved_at}" in caplog.text
        if stopper == "TermAt":
            assert stopped.value.code == 143 and f"SIGTERM: stopped at step {saved_at}" in caplog.text
        assert not (tmp_path / name / "metrics.json").exists()
        last = tmp_path / name / "checkpoints" / "last.ckpt"
        assert torch.load(last, weights_only=True)["global_step"] == saved_at, name

        resumed = run_tiny(f"{name}-resumed", f"ckpt_path={last}")  # in a new run directory
        assert numbers(resumed) == numbers(whole), name
        # The loggers get the same training accuracy, the epoch it stopped in counted over the whole epoch.
        logged = train_accuracies(tmp_path / f"{name}-resumed")
        assert logged and logged.items() <= train_accuracies(tmp_path / "whole").items(), name
        assert same_weights(final_weights(tmp_path / f"{name}-resumed"), final_weights(tmp_path / "whole")), (
            name
        )


@pytest.mark.slow
def test_the_epoch_line_of_a_resumed_epoch_times_it_from_the_resume(
    compose_train, tiny_mnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Output to a file or pipe gets one line per epoch (`EpochLines`); Lightning starts a run resumed
    mid-epoch without `on_train_epoch_start`."""
    lines = [o for o in TINY if not o.startswith("callbacks.progress_bar")]  # the lines need the bar's place

    def run(name: str, *overrides: str) -> None:
        out = f"paths.output_dir={tmp_path / name}"
        train(compose_train(f"paths.data_dir={tiny_mnist}", out, *lines, *overrides))

    with pytest.raises(Crash):
        run("stopped", "+callbacks.stop._target_=test_resume.CrashAt", "+callbacks.stop.step=17")
    caplog.clear()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="mnist_logreg.callbacks.progress"):
        run("resumed", f"ckpt_path={tmp_path / 'stopped' / 'checkpoints' / 'last.ckpt'}")
    lasted = time.monotonic() - started
    seconds = [float(t) for t in re.findall(r"Epoch [23]/3: .* \(([\d.]+) s\)", caplog.text)]
    assert len(seconds) == 2 and max(seconds) < lasted, caplog.text


@pytest.mark.slow
def test_a_run_resumed_in_its_own_directory_keeps_the_csv_rows_of_both_attempts(
    run_tiny, tmp_path: Path
) -> None:
    with pytest.raises(Crash):
        run_tiny("job", "+callbacks.stop._target_=test_resume.CrashAt", "+callbacks.stop.step=17")
    run_tiny("job", "ckpt_path=auto")
    steps = []
    for version in ("version_0", "version_1"):
        with (tmp_path / "job" / "csv" / version / "metrics.csv").open() as f:
            steps.append({int(row["step"]) for row in csv.DictReader(f) if row["val/loss"]})
    assert steps == [{4, 9, 14}, {19, 24, 29}]  # validations before the crash at step 17, and after


@pytest.mark.slow
def test_a_sweep_job_stopped_by_sigterm_records_interrupted(
    run_tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Restored after the test, so that no other test runs as a multirun job.
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    with pytest.raises(SystemExit) as stopped:
        run_tiny(
            "job",
            "hydra.mode=MULTIRUN",
            "+callbacks.stop._target_=test_resume.TermAt",
            "+callbacks.stop.step=3",
        )
    assert stopped.value.code == 143
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())  # Hydra's job directory
    assert record["status"] == "interrupted"
    assert record["error"].startswith("SIGTERM at step 4; to finish the job: python ")
    assert record["error"].endswith(f"ckpt_path={tmp_path / 'job' / 'checkpoints' / 'last.ckpt'}")


@pytest.mark.slow
def test_a_requeued_submitit_job_saves_hands_over_and_continues_by_itself(
    run_tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture, submitit_job
) -> None:
    """USR2 mid-epoch: `last.ckpt` at the end of that step, then submitit's handler (which requeues the job).
    The job started again with the same command continues from there, and ends like an uninterrupted run."""
    whole = run_tiny("whole")
    last = tmp_path / "job" / "checkpoints" / "last.ckpt"
    submitit = Submitit(last, requeues=True)
    submitit_job(submitit.checkpoint_and_try_requeue)
    stop = ("+callbacks.stop._target_=test_resume.Usr2At", "+callbacks.stop.step=13")
    with pytest.raises(SystemExit) as stopped:
        run_tiny("job", *stop)
    assert stopped.value.code == 3 and submitit.saw_step == 14  # submitit's exit, after the save
    assert f"SIGUSR2: saved {last} at step 14; submitit requeues this job" in caplog.text
    assert not (tmp_path / "job" / "metrics.json").exists()

    with caplog.at_level(logging.INFO, logger="mnist_logreg.runs.resume"):
        again = run_tiny("job")  # the requeued job: the same command
    assert f"This submitit job was stopped before: continuing from {last}" in caplog.text
    assert numbers(again) == numbers(whole)
    assert same_weights(final_weights(tmp_path / "job"), final_weights(tmp_path / "whole"))

    caplog.clear()  # run again once finished, in the same directory: a fresh start, as it was asked for
    with caplog.at_level(logging.INFO, logger="mnist_logreg.runs.resume"):
        assert numbers(run_tiny("job")) == numbers(whole)
    assert "continuing from" not in caplog.text
    assert f"Restoring states from the checkpoint path at {last}" not in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("stopper", ["TermAndUsr2At", "Usr2AndTermAt"])
def test_sigterm_and_usr2_together_save_then_requeue(
    run_tiny, tmp_path: Path, submitit_job, stopper: str
) -> None:
    submitit = Submitit(tmp_path / "job" / "checkpoints" / "last.ckpt", requeues=True)
    submitit_job(submitit.checkpoint_and_try_requeue)
    with pytest.raises(SystemExit) as stopped:
        run_tiny("job", f"+callbacks.stop._target_=test_resume.{stopper}", "+callbacks.stop.step=3")
    assert stopped.value.code == 3 and submitit.saw_step == 4


@pytest.mark.slow
def test_a_submitit_job_that_is_not_requeued_ends_with_the_command_that_finishes_it(
    run_tiny, tmp_path: Path, submitit_job
) -> None:
    last = tmp_path / "job" / "checkpoints" / "last.ckpt"
    submitit = Submitit(last, requeues=False)
    submitit_job(submitit.checkpoint_and_try_requeue)
    with pytest.raises(UserError) as stopped:  # in a sweep: recorded as failed, and the sweep goes on
        run_tiny("job", "+callbacks.stop._target_=test_resume.Usr2At", "+callbacks.stop.step=3")
    assert submitit.saw_step == 4
    message = str(stopped.value)
    reason = "(Job not requeued because: timed-out too many times.)"
    assert message.startswith(
        f"SIGUSR2: submitit did not requeue the job {reason}; to finish the run: python "
    )
    assert message.endswith(f"ckpt_path={last}")


def test_a_submitit_job_stopped_before_continues_from_its_own_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever `ckpt_path` says; unless the job had finished, or this is not a submitit job."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path(None, tmp_path) is None and resolve_ckpt_path("a.ckpt", tmp_path) == "a.ckpt"
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    for given in (None, "auto", "a.ckpt"):
        assert resolve_ckpt_path(given, tmp_path) == str(last)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    assert resolve_ckpt_path("a.ckpt", tmp_path) == str(last)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "completed"}))
    assert resolve_ckpt_path(None, tmp_path) is None and resolve_ckpt_path("a.ckpt", tmp_path) == "a.ckpt"
    assert resolve_ckpt_path("auto", tmp_path) == str(last)  # asked for


@pytest.mark.slow
def test_outside_submitit_usr2_is_left_alone(
    run_tiny, tmp_path: Path, submitit_job, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only submitit's handler is deferred, and only in a submitit job."""
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    submitit = Submitit(tmp_path / "job" / "checkpoints" / "last.ckpt", requeues=True)
    submitit_job(submitit.checkpoint_and_try_requeue)
    with pytest.raises(SystemExit) as stopped:  # the handler ran at once, mid-step: nothing saved first
        run_tiny("job", "+callbacks.stop._target_=test_resume.Usr2At", "+callbacks.stop.step=3")
    assert stopped.value.code == 3 and submitit.saw_step is None


def start_train(*overrides: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
def test_killed_or_terminated_then_resumed_gives_the_uninterrupted_numbers(tmp_path: Path) -> None:
    """Real MNIST, 2 epochs of 300 steps, a validation and checkpoints every 50 steps. One run is killed
    (SIGKILL) and resumed from its last.ckpt in a new directory; one is terminated (SIGTERM) and started
    again with the same command, `ckpt_path=auto` and the same run directory."""
    common = (
        "optimizer.lr=0.1",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=300",
        "+trainer.val_check_interval=50",
        "trainer.accelerator=cpu",
        "callbacks.progress_bar.refresh_rate=0",
    )
    whole, killed, resumed, termed = (tmp_path / name for name in ("whole", "killed", "resumed", "termed"))
    uninterrupted = start_train(*common, f"hydra.run.dir={whole}", log=tmp_path / "whole.txt")
    auto = (*common, "ckpt_path=auto", f"hydra.run.dir={termed}")
    victims = {
        signal.SIGKILL: start_train(*common, f"hydra.run.dir={killed}", log=tmp_path / "killed.txt"),
        signal.SIGTERM: start_train(*auto, log=tmp_path / "termed.txt"),
    }
    # Each gets its signal as soon as its first checkpoint exists, hundreds of steps before its end.
    waiting = {signal.SIGKILL: killed, signal.SIGTERM: termed}
    deadline = time.monotonic() + 240
    while waiting and time.monotonic() < deadline:
        for signum, run in list(waiting.items()):
            if (run / "checkpoints" / "last.ckpt").exists() or victims[signum].poll() is not None:
                victims[signum].send_signal(signum)
                del waiting[signum]
        time.sleep(0.002)
    assert victims[signal.SIGKILL].wait(timeout=120) == -signal.SIGKILL
    assert victims[signal.SIGTERM].wait(timeout=120) == 143
    for run in (killed, termed):
        assert not (run / "metrics.json").exists(), f"{run.name} finished before the signal reached it"
    steps = {
        run: torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        for run in (killed, termed)
    }
    assert all(50 <= step < 600 for step in steps.values()), steps
    last = termed / "checkpoints" / "last.ckpt"
    console = (tmp_path / "termed.txt").read_text()
    # Started with `ckpt_path=auto`: the command that finishes it is its own, in its own directory.
    line = f"SIGTERM: stopped at step {steps[termed]} and saved {last}; to finish the run: python"
    (line,) = [text for text in console.splitlines() if line in text]
    assert line.endswith(f"callbacks.progress_bar.refresh_rate=0 ckpt_path=auto hydra.run.dir={termed}")

    resume = start_train(
        *common,
        f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={resumed}",
        log=tmp_path / "resumed.txt",
    )
    again = start_train(*auto, log=tmp_path / "again.txt")
    for process, log in ((resume, "resumed.txt"), (again, "again.txt"), (uninterrupted, "whole.txt")):
        assert process.wait(timeout=300) == 0, (tmp_path / log).read_text()[-3000:]
    again_console = (tmp_path / "again.txt").read_text()
    assert f"ckpt_path=auto: resuming from {last}" in again_console
    assert "exists and is not empty" not in again_console  # its own checkpoints are no strays
    expected = json.loads((whole / "metrics.json").read_text())
    assert expected["steps"] == 600 and expected["val/acc"] > 0.8
    for run in (resumed, termed):
        assert numbers(json.loads((run / "metrics.json").read_text())) == numbers(expected), run.name
        assert same_weights(final_weights(run), final_weights(whole)), run.name
