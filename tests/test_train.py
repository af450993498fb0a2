"""End-to-end `train.py` runs on the real MNIST files (slow: seconds each)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import ROOT, run_script
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.core.model import LogisticRegression
from mnist_logreg.runs.training import train

pytestmark = pytest.mark.slow


def test_short_run_writes_config_events_checkpoints_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_script(
        "train.py",
        "optimizer.lr=0.1",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=100",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert 0.5 < metrics["test/acc"] < 1.0 and 0.5 < metrics["val/acc"] < 1.0  # chance is 0.1
    assert metrics["fit_time_s"] > 0 and metrics["test_time_s"] > 0 and metrics["steps"] == 200
    assert OmegaConf.load(out / ".hydra" / "config.yaml").optimizer.lr == 0.1  # the composed config
    output = result.stdout + result.stderr
    assert "test/acc" in output  # the final results table
    # Output to a pipe: one line per epoch instead of a progress bar redrawn into it, no colour codes; the
    # config tree and the model summary.
    assert "\r" not in output and "\x1b" not in output
    epochs = re.findall(
        r"Epoch (\d)/2: val/loss [\d.]+, val/acc [\d.]+, train/acc [\d.]+ \([\d.]+ s\)", output
    )
    assert epochs == ["1", "2"]
    assert "├── optimizer" in output and "┃ Name" in output
    log = (out / "train.log").read_text()  # in the run directory, not where the command ran
    assert "Epoch 2/2: val/loss" in log and "├── optimizer" in log and "\x1b" not in log
    assert not (ROOT / "train.log").exists()

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"} <= tags

    best = out / "checkpoints" / "best.ckpt"
    assert best.is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    assert metrics["ckpt_path"] == str(best)
    # The checkpoint alone rebuilds the model and the data; its test accuracy is the run's.
    model = LogisticRegression.load_from_checkpoint(best).eval()
    datamodule = MNISTDataModule.load_from_checkpoint(best)
    datamodule.setup()
    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(metrics["test/acc"], abs=1e-6)


def test_a_missing_checkpoint_is_refused_before_anything_else_is_printed(tmp_path: Path) -> None:
    result = run_script("train.py", "ckpt_path=nope.ckpt", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    (line,) = (result.stdout + result.stderr).strip().splitlines()
    fix = "give a checkpoint file, such as logs/runs/<run>/checkpoints/last.ckpt"
    assert line.endswith(f"ckpt_path=nope.ckpt does not exist: {fix}")


def test_find_lr_into_a_pipe_prints_lines_not_a_bar(tmp_path: Path) -> None:
    out = tmp_path / "lr_find"
    result = run_script("find_lr.py", "lr_find.num_training=40", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\r" not in output and "Finding best initial lr" not in output  # Lightning's tqdm bar
    found = json.loads((out / "lr_find.json").read_text())
    assert len(found["lr"]) == 40 and f"optimizer.lr={found['suggestion']:.3g}" in output


def test_tutorial_defaults_reach_about_82_percent(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_script("train.py", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.80 <= metrics["test/acc"] <= 0.86
    assert metrics["steps"] == 5 * 550


def test_ten_times_the_learning_rate_reaches_88_percent(compose_train) -> None:
    metrics = train(compose_train("optimizer.lr=0.01", "callbacks.progress_bar.refresh_rate=0"))
    assert metrics["test/acc"] >= 0.88
