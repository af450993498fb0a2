"""A diverged loss fails the run at once; Ctrl-C stops it with a checkpoint and no metrics.json."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ROOT
from mnist_logreg.callbacks.stopping import DivergenceError
from mnist_logreg.runs.training import train


@pytest.mark.slow
def test_a_diverged_loss_stops_the_run_at_once(compose_train, tiny_mnist: Path, tmp_path: Path) -> None:
    cfg = compose_train(
        f"paths.data_dir={tiny_mnist}",
        "optimizer.lr=1e38",  # the weights overflow float32 after one step
        "data.val_size=100",
        "trainer.max_epochs=3",
        "callbacks.progress_bar.refresh_rate=0",
    )
    with pytest.raises(
        DivergenceError, match=r"^Training diverged: the loss is nan at step 1 \(epoch 0\)"
    ) as failed:
        train(cfg)
    assert "lower optimizer.lr" in str(failed.value) and "\n" not in str(failed.value)
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()
    assert not (run / "checkpoints").exists()  # stopped before the first validation could save one


@pytest.mark.slow
def test_without_the_check_a_diverged_run_would_report_nan(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train(
        f"paths.data_dir={tiny_mnist}",
        "optimizer.lr=1e38",
        "data.val_size=100",
        "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
        "callbacks.stop_on_divergence=null",  # how any callback is switched off
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and math.isnan(metrics["test/loss"])


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path, sigint_handled) -> None:
    run, log = tmp_path / "run", tmp_path / "console.txt"
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "trainer.max_epochs=3",
            "+trainer.limit_train_batches=200",
            "+trainer.val_check_interval=50",
            "trainer.accelerator=cpu",
            "callbacks.progress_bar.refresh_rate=0",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    first_step = torch.load(last, weights_only=True)["global_step"]
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    console = log.read_text()

    assert process.returncode == 1, console[-2000:]
    assert "Traceback" not in console
    # How to resume: the run's own settings (not its run dir), and the checkpoint.
    resume = next(line for line in console.splitlines() if "to finish the run:" in line)
    assert resume.endswith(
        f"trainer.max_epochs=3 +trainer.limit_train_batches=200 +trainer.val_check_interval=50 "
        f"trainer.accelerator=cpu callbacks.progress_bar.refresh_rate=0 ckpt_path={last}"
    )
    assert "hydra.run.dir" not in resume
    assert not (run / "metrics.json").exists()
    step = torch.load(last, weights_only=True)["global_step"]
    assert first_step < step < 3 * 200  # saved where Ctrl-C landed, before the run's end
