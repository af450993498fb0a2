"""The figures: weight colours, the choice of mistakes, and what a training run saves and logs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_logreg.checkpoint_loading import load_checkpoint
from mnist_logreg.figures import (
    WEIGHTS_CMAP,
    confident_mistakes,
    confusion_matrix,
    mistakes_figure,
    render,
    weight_templates,
)


def test_weight_colours_are_symmetric_about_zero() -> None:
    import matplotlib

    weights = torch.zeros(10, 784)
    weights[1], weights[2] = 0.5, -0.2  # the limits are +-0.5 whatever the sign of the largest weight
    fig = weight_templates(weights)
    pixels = render(fig)
    assert pixels.shape == (440, 1000, 3)

    (ax, _colorbar) = fig.axes
    captions = {text.get_text(): text.get_position() for text in ax.texts}

    def colour_of_template(digit: int) -> np.ndarray:
        x, y = captions[str(digit)]  # the caption sits on the template's top edge, its middle 14 pixels below
        col, row = ax.transData.transform((x, y + 14))  # display pixels, origin at the bottom left
        return pixels[int(pixels.shape[0] - row), int(col)].astype(int)

    cmap = matplotlib.colormaps[WEIGHTS_CMAP]
    for digit, position in ((0, 0.5), (1, 1.0), (2, 0.3)):  # -0.2 on a -0.5..0.5 scale is 0.3 along it
        expected = np.round(np.array(cmap(position)[:3]) * 255)
        assert np.abs(colour_of_template(digit) - expected).max() <= 1, digit
    assert sorted(captions) == [str(digit) for digit in range(10)]


def test_confident_mistakes_are_wrong_and_most_confident_first() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    labels = torch.tensor([0, 0, 1, 0, 1])
    assert confident_mistakes(probs, labels, 10).tolist() == [4, 1, 3, 2]
    assert confident_mistakes(probs, labels, 2).tolist() == [4, 1]


@pytest.mark.parametrize("wrong", [0, 3])
def test_mistakes_figure_shows_each_mistake_with_its_caption(wrong: int) -> None:
    labels = torch.arange(10) % 10
    probs = torch.nn.functional.one_hot(labels, 10).float() * 0.9 + 0.01
    probs[:wrong] = probs[:wrong].roll(1, dims=1)  # the first `wrong` images are given the next class
    images = torch.rand(10, 784)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = mistakes_figure(images, labels, probs, confident_mistakes(probs, labels, 24))
        pixels = render(fig)
    assert pixels.shape == (480, 1000, 3)
    captions = [text.get_text() for ax in fig.axes for text in ax.texts]
    assert captions == [f"true {i}, said {i + 1}\n91.0%" for i in range(wrong)]
    assert fig.get_suptitle() == (
        "No mistakes on the test set"
        if wrong == 0
        else f"The {wrong} most confident mistakes on the test set"
    )


@pytest.mark.slow
def test_a_run_saves_and_logs_the_figures(trained_run: Path) -> None:
    sizes = {
        "weight_templates": (1000, 440),
        "confusion_matrix": (800, 750),
        "confident_mistakes": (1000, 480),
    }
    for name, size in sizes.items():
        with Image.open(trained_run / "figures" / f"{name}.png") as image:
            assert (image.format, image.size) == ("PNG", size)
            colours = np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)
            assert len(colours) > 20  # a drawing, not a blank page

    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {f"figures/{name}" for name in sizes}
    (logged,) = events.Images("figures/weight_templates")
    assert (logged.width, logged.height) == sizes["weight_templates"]


@pytest.mark.slow
def test_confusion_matrix_counts_the_whole_test_set(trained_run: Path) -> None:
    model, datamodule = load_checkpoint(trained_run / "checkpoints" / "best.ckpt")
    datamodule.setup()
    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        matrix = confusion_matrix(model(images).argmax(1), labels, 10)
    assert matrix.sum() == len(labels) == 10_000
    assert torch.equal(matrix.sum(1), labels.bincount(minlength=10))  # rows are the true classes
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert int(matrix.trace()) == round(metrics["test/acc"] * 10_000)
