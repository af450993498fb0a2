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

from mnist_logreg.callbacks.figures import (
    WEIGHTS_CMAP,
    confident_mistakes,
    confusion_figure,
    confusion_matrix,
    mistakes_figure,
    render,
    tiles,
    weight_templates,
)
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.data import MNISTDataModule


def test_weight_colours_are_symmetric_about_zero() -> None:
    import matplotlib

    weights = torch.zeros(10, 784)
    weights[1], weights[2], weights[7] = 0.5, -0.2, 0.35  # limits +-0.5, whatever the largest weight's sign
    fig = weight_templates(weights)
    pixels = render(fig)
    assert pixels.shape == (440, 1000, 3)

    (ax, _colorbar) = fig.axes
    captions = {text.get_text(): text.get_position() for text in ax.texts}

    def colour_at(digit: int, dx: float = 0.0) -> np.ndarray:
        x, y = captions[str(digit)]  # the caption sits on the template's top edge, its middle 14 pixels below
        col, row = ax.transData.transform((x + dx, y + 14))  # display pixels, origin at the bottom left
        return pixels[int(pixels.shape[0] - row), int(col)].astype(int)

    cmap = matplotlib.colormaps[WEIGHTS_CMAP]
    # -0.2 on a -0.5..0.5 scale is 0.3 along it; 7 is on the second row
    for digit, position in ((0, 0.5), (1, 1.0), (2, 0.3), (7, 0.85)):
        expected = np.round(np.array(cmap(position)[:3]) * 255)
        assert np.abs(colour_at(digit) - expected).max() <= 1, digit
    assert colour_at(0, dx=15.5).tolist() == [255, 255, 255]  # the gap between templates 0 and 1 is white
    assert sorted(captions) == [str(digit) for digit in range(10)]


def test_tiles_puts_each_image_under_its_caption() -> None:
    images = torch.rand(7, 784)
    mosaic, tops = tiles(images, cols=3, gap=(2, 5))
    assert mosaic.shape == (3 * (5 + 28), 3 * 28 + 2 * 2)
    # Row r's tiles start 5 + 33 r pixels down, column c's 30 c across; a caption sits on its tile's top edge.
    assert tops == [(30 * (i % 3) + 13.5, 5 + 33 * (i // 3) - 0.5) for i in range(7)]
    for image, (x, y) in zip(images, tops, strict=True):
        top, left = int(y + 0.5), int(x - 13.5)  # data coordinates: pixel centres are whole numbers
        np.testing.assert_array_equal(mosaic[top : top + 28, left : left + 28], image.reshape(28, 28).numpy())
        assert np.isnan(mosaic[top - 5 : top, left : left + 28]).all()  # the caption's room is empty
    assert np.isnan(mosaic).sum() == mosaic.size - 7 * 784  # everything else is gap
    assert tiles(images[:2], cols=3, gap=(2, 5), rows=3)[0].shape == mosaic.shape


def test_confident_mistakes_are_wrong_and_most_confident_first() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    labels = torch.tensor([0, 0, 1, 0, 1])
    assert confident_mistakes(probs, labels, 10).tolist() == [4, 1, 3, 2]
    assert confident_mistakes(probs, labels, 2).tolist() == [4, 1]


@pytest.mark.parametrize("wrong", [(), (4, 7, 9)])
def test_mistakes_figure_shows_each_mistake_over_its_caption(wrong: tuple[int, ...]) -> None:
    labels = torch.arange(10)
    probs = torch.full((10, 10), 0.01)
    probs[labels, labels] = 0.91
    for i, confidence in zip(wrong, (0.6, 0.8, 0.7), strict=False):  # image i is said to be (i + 1) % 10
        probs[i] = 0.01
        probs[i, (i + 1) % 10] = confidence
    images = (labels.float() / 10).repeat_interleave(784).reshape(10, 784)  # image i: every pixel i / 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = mistakes_figure(images, labels, probs, confident_mistakes(probs, labels, 24))
        pixels = render(fig)
    assert pixels.shape == (480, 1000, 3)
    if not wrong:
        assert fig.axes == [] and fig.get_suptitle() == "No mistakes on the test set"
        return
    (ax,) = fig.axes
    mosaic = np.asarray(ax.images[0].get_array())
    captions = [(text.get_text(), text.get_position()) for text in ax.texts]
    assert [text for text, _ in captions] == [  # most confident first
        "true 7, said 8\n80.0%",
        "true 9, said 0\n70.0%",
        "true 4, said 5\n60.0%",
    ]
    for text, (x, y) in captions:
        true = int(text.split(",")[0].removeprefix("true "))
        tile = mosaic[int(y + 0.5) : int(y + 0.5) + 28, int(x - 13.5) : int(x - 13.5) + 28]
        np.testing.assert_allclose(tile, true / 10, atol=1e-6)
    assert fig.get_suptitle() == "The 3 most confident mistakes on the test set"


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
    model = load_model(trained_run / "checkpoints" / "best.ckpt")
    datamodule = MNISTDataModule()
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        matrix = confusion_matrix(model(images).argmax(1), labels, 10)
    assert matrix.sum() == len(labels) == 10_000
    assert torch.equal(matrix.sum(1), labels.bincount(minlength=10))  # rows are the true classes
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert int(matrix.trace()) == round(metrics["test/acc"] * 10_000)


def test_colour_images_and_class_names_are_drawn() -> None:
    images = torch.rand(5, 3, 4, 6)
    mosaic, tops = tiles(images, cols=2, gap=(1, 3), shape=(3, 4, 6))
    assert mosaic.shape == (3 * (3 + 4), 2 * 6 + 1, 3)  # rows of height 4 under 3 pixels of caption room
    np.testing.assert_array_equal(mosaic[3:7, 7:13], images[1].permute(1, 2, 0).numpy())
    assert tops[1] == (7 + 2.5, 2.5)

    names = ["cat", "dog", "fox"]
    fig = weight_templates(torch.randn(3, 3 * 4 * 6), (3, 4, 6), names)
    assert render(fig).shape == (440, 1000, 3)
    (ax,) = fig.axes  # no colour bar: each channel's weight is its own colour's strength
    assert [text.get_text() for text in ax.texts] == names
    rgb = ax.images[0].get_array()
    assert rgb.shape == (2 * (7 + 4), 2 * (6 + 3) - 3, 3)  # 2 x 2 templates, 3 apart, 7 of caption room
    assert float(rgb.min()) >= 0 and float(rgb.max()) <= 1

    matrix = confusion_matrix(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]), 3)
    labels = [t.get_text() for t in confusion_figure(matrix, names).axes[0].get_xticklabels()]
    assert labels == names
