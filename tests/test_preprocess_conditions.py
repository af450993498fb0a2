"""Photos as they come: each condition of `benchmarks/preprocess_conditions.py` held to the goal.

In every condition at least 90% of MNIST test digits rendered that way get the prediction the clean 28x28
digit gets, with the tests' short checkpoint, and none is refused as blank. The last row, every condition
in one image, is not one of the goal's: it is held to 85%. docs/predict.md has the same table on more
digits, before and after, from the benchmark.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import MNIST

from helpers import ROOT
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.inference.preprocess import to_mnist

GOAL = 0.90
ALL_AT_ONCE = "all at once: marker, coloured paper, shadow, tight crop"
COUNT = 300  # test digits per condition: about a second each on one core


def load_benchmark():
    """benchmarks/ is a folder of scripts, not a package."""
    path = ROOT / "benchmarks" / "preprocess_conditions.py"
    spec = importlib.util.spec_from_file_location("preprocess_conditions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


benchmark = load_benchmark()


@pytest.fixture(scope="module")
def model_and_digits(trained_run: Path) -> tuple[torch.nn.Module, np.ndarray]:
    model = load_model(trained_run / "checkpoints" / "best.ckpt")
    return model, MNIST(str(ROOT / "data"), train=False).data[:COUNT].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(benchmark.CONDITIONS))
def test_each_condition_reads_as_the_clean_digit(model_and_digits, name: str) -> None:
    model, digits = model_and_digits
    images = benchmark.rendered(benchmark.CONDITIONS[name], digits)
    share, refused = benchmark.agreement(model, to_mnist, images, digits)
    assert refused == 0
    goal = 0.85 if name == ALL_AT_ONCE else GOAL
    assert share >= goal, f"{name}: {share:.1%} of {len(digits)} digits get the clean digit's prediction"
