"""A run written before the package was grouped into subpackages (`tests/fixtures/run_v0_1`: 2 epochs of 30
batches, deskewed, on the real MNIST) still loads, predicts as its record says, and resumes to the same
weights as a run never stopped. Checkpoints name no module of this project (the network is a `torch.nn`
spec, the callbacks' states are keyed by class name): the resume test checks the old one and a new one."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from helpers import ROOT, compose_config
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.runs.evaluation import evaluate
from mnist_logreg.runs.training import train

OLD_RUN = ROOT / "tests" / "fixtures" / "run_v0_1"
# The old run's settings (its .hydra/overrides.yaml), quiet and without the test.
SETTINGS = [
    "+trainer.limit_train_batches=30",
    "+trainer.limit_val_batches=10",
    "model.deskew=true",
    "callbacks.figures=null",
    "logger=csv",
    "callbacks.progress_bar.refresh_rate=0",
    "trainer.accelerator=cpu",
]


def test_an_old_checkpoint_loads_as_the_classifier_with_its_transform() -> None:
    assert load_model(OLD_RUN / "checkpoints" / "best.ckpt").hparams.deskew is True


def names_no_module_of_this_project(checkpoint: dict) -> bool:
    """A checkpoint that names none of this project's modules loads whatever the package's layout."""
    return "mnist_logreg" not in json.dumps(checkpoint["hyper_parameters"]) and all(
        "mnist_logreg" not in key for key in checkpoint["callbacks"]
    )


@pytest.mark.slow
def test_an_old_checkpoint_tests_as_its_record_says(tmp_path: Path) -> None:
    recorded = json.loads((OLD_RUN / "metrics.json").read_text())
    overrides = [f"ckpt_path={OLD_RUN / 'checkpoints' / 'best.ckpt'}", "trainer.accelerator=cpu"]
    metrics = evaluate(compose_config(overrides, tmp_path / "eval", "eval"))
    assert metrics["test/acc"] == pytest.approx(recorded["test/acc"], abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(recorded["test/loss"], abs=1e-5)


@pytest.mark.slow
def test_an_old_checkpoint_resumes_to_the_weights_of_a_run_never_stopped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN / "checkpoints", old)
    common = [*SETTINGS, "trainer.max_epochs=3", "test=false"]
    train(compose_config(common, tmp_path / "unbroken"))
    with caplog.at_level(logging.INFO):
        train(compose_config([*common, f"ckpt_path={old / 'last.ckpt'}"], tmp_path / "resumed"))
    # Lightning's own word that it went on from the old checkpoint (a fresh start would end equal too).
    assert f"Restored all states from the checkpoint at {old / 'last.ckpt'}" in caplog.text
    unbroken = torch.load(tmp_path / "unbroken" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == unbroken["global_step"] == 90
    # Neither the old checkpoint nor one this layout writes names a module of the project.
    old_checkpoint = torch.load(old / "last.ckpt", weights_only=True)
    assert names_no_module_of_this_project(old_checkpoint) and names_no_module_of_this_project(resumed)
    for name, weights in unbroken["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weights), name
