"""What the trained classifier looks like: weight templates, confusion matrix, most confident mistakes,
and, for a model trained on deskewed images, test digits before and after deskewing.

A linear classifier is the one model whose weights a person can read: class c's logit is the sum of the
image's pixels weighted by row c of the weight matrix, so each row, drawn as the image (28x28 for MNIST), is a
template of where ink speaks for the class (red) or against it (blue); for colour images, a colour template.

The figures are drawn once, when testing ends, for the tested model on the whole test set in one forward
pass over the test loader it was tested on (`trainer.test_dataloaders`): nothing runs in the training loop.
Images of any `C x H x W` are drawn (grayscale for one channel, RGB for three); classes are captioned with
the model's class names. They are drawn on the Agg canvas directly, without pyplot's global
state, and each grid of digits is one image on one Axes (`tiles`), which draws several times faster.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_logreg.core.data_contract import all_batches
from mnist_logreg.core.deskew import shear
from mnist_logreg.files import replaced_atomically
from mnist_logreg.plotting import render

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

DPI = 100
WEIGHTS_SIZE = (10.0, 4.4)  # inches: 1000 x 440 pixels at DPI
CONFUSION_SIZE = (8.0, 7.5)  # 800 x 750
MISTAKES_SIZE = (10.0, 4.8)  # 1000 x 480
MISTAKES_GRID = (3, 8)  # the 24 most confident mistakes
DESKEW_SIZE = (10.0, 3.2)  # 1000 x 320: one test digit of each class, as read and deskewed
WEIGHTS_CMAP = "RdBu_r"  # diverging: zero is the map's centre, positive weights red
MNIST_SHAPE = (1, 28, 28)


def tiles(
    images: torch.Tensor,
    cols: int,
    gap: tuple[int, int],
    rows: int | None = None,
    shape: tuple[int, ...] = MNIST_SHAPE,
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Images of `shape` (`C x H x W`) laid out row by row in one array, NaN around them, and where each one's
    caption goes. The array is `H' x W'` for one channel, `H' x W' x C` for more.

    Each row of tiles has `gap[1]` empty pixels above it for captions; tiles are `gap[0]` pixels apart.
    `rows` fixes the array's height (so that a few images are drawn as large as a full grid's).

    One image on one Axes: matplotlib spends more on an Axes (its spines, ticks and layout) than on drawing
    a small image, so a grid of small Axes costs several times as much as the same grid as one image.
    """
    channels, height, width = shape
    rows = rows or math.ceil(len(images) / cols)
    gap_x, gap_y = gap
    size = (rows * (height + gap_y), cols * (width + gap_x) - gap_x)
    mosaic = np.full(size if channels == 1 else (*size, channels), np.nan, dtype=np.float32)
    tops = []
    for i, image in enumerate(images):
        top, left = gap_y + (i // cols) * (height + gap_y), (i % cols) * (width + gap_x)
        pixels = image.reshape(shape).numpy()
        tile = pixels[0] if channels == 1 else pixels.transpose(1, 2, 0)
        mosaic[top : top + height, left : left + width] = tile
        tops.append((left + (width - 1) / 2, top - 0.5))
    return mosaic, tops


def show_images(ax: Axes, mosaic: np.ndarray) -> None:
    """Images as read: grayscale as dark ink on white (MNIST's digits), or in their colours; white between."""
    from matplotlib import colormaps

    if mosaic.ndim == 2:
        gray = colormaps["gray_r"].with_extremes(bad="white")
        ax.imshow(mosaic, cmap=gray, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(np.nan_to_num(mosaic[..., :3], nan=1.0).clip(0.0, 1.0), interpolation="nearest")


def tiled_axes(fig: Figure, mosaic: np.ndarray) -> Axes:
    """One Axes under the title, without frame or ticks, whose data coordinates are the mosaic's pixels."""
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.84))
    ax.set_axis_off()
    ax.set_xlim(-0.5, mosaic.shape[1] - 0.5)
    ax.set_ylim(mosaic.shape[0] - 0.5, -0.5)
    return ax


def weight_templates(
    weights: torch.Tensor, shape: tuple[int, ...] = MNIST_SHAPE, class_names: list[str] | None = None
) -> Figure:
    """One image of `shape` per class, all on one colour scale that is symmetric about zero.

    One channel: a diverging colour map, red for positive weights. Three (RGB): each channel's weight as that
    colour's strength, grey for zero, so a template is tinted with the colours that speak for its class.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    weights = weights.detach().float().cpu()
    names = class_names or [str(c) for c in range(len(weights))]
    limit = float(weights.abs().max()) or 1.0  # symmetric limits put zero weight at the map's centre
    colour = shape[0] != 1
    if colour:
        weights = 0.5 + weights / (2 * limit)  # -limit..limit onto 0..1, zero at mid-grey
    mosaic, tops = tiles(weights, cols=(len(weights) + 1) // 2, gap=(3, 7), shape=shape)
    fig = Figure(figsize=WEIGHTS_SIZE, dpi=DPI)
    ax = tiled_axes(fig, mosaic)
    if colour:
        show_images(ax, mosaic)
        fig.suptitle("Weight templates: a channel bright where its colour raises the class's logit (grey: 0)")
    else:
        cmap = colormaps[WEIGHTS_CMAP].with_extremes(bad="white")  # the gaps between templates
        image = ax.imshow(mosaic, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8, label="weight", pad=0.01)
        fig.suptitle("Weight templates: ink on red pixels raises the class's logit, ink on blue lowers it")
    for name, (x, y) in zip(names, tops, strict=True):
        ax.text(x, y, name, ha="center", va="bottom", fontsize=12)
    return fig


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    return MulticlassConfusionMatrix(num_classes, validate_args=False)(preds, labels)


def confusion_figure(matrix: torch.Tensor, class_names: list[str] | None = None) -> Figure:
    """The counts drawn with torchmetrics' own plot, rows and columns labelled with the class names."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=CONFUSION_SIZE, dpi=DPI)
    ax = fig.subplots()
    with warnings.catch_warnings():
        # torchmetrics hands matplotlib a tensor, whose __array__ predates numpy 2's `copy` argument.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        MulticlassConfusionMatrix(len(matrix)).plot(matrix, ax=ax, cmap="Blues", labels=class_names)
    total = int(matrix.sum())
    ax.set_title(f"Confusion matrix: {total} test images, accuracy {int(matrix.trace()) / total:.4f}")
    return fig


def confident_mistakes(probs: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the wrongly classified images, most confident first."""
    confidence, preds = probs.max(1)
    wrong = (preds != labels).nonzero().squeeze(1)
    order = confidence[wrong].argsort(descending=True, stable=True)
    return wrong[order[:count]]


def mistakes_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    indices: torch.Tensor,
    class_names: list[str] | None = None,
    shape: tuple[int, ...] = MNIST_SHAPE,
) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=MISTAKES_SIZE, dpi=DPI)
    if len(indices) == 0:
        fig.suptitle("No mistakes on the test set")
        return fig
    confidence, preds = probs.max(1)
    rows, cols = MISTAKES_GRID
    indices = indices[: rows * cols]
    names = class_names or [str(c) for c in range(probs.shape[1])]
    mosaic, tops = tiles(images[indices], cols=cols, gap=(6, 16), rows=rows, shape=shape)
    ax = tiled_axes(fig, mosaic)
    show_images(ax, mosaic)
    short = max(len(name) for name in names) <= 2  # digits: one line; longer names get a line each
    for (x, y), i in zip(tops, indices.tolist(), strict=True):
        true, said = names[labels[i]], names[preds[i]]
        caption = f"true {true}, said {said}" if short else f"true {true}\nsaid {said}"
        ax.text(x, y, f"{caption}\n{confidence[i]:.1%}", ha="center", va="bottom", fontsize=9 if short else 7)
    fig.suptitle(f"The {len(indices)} most confident mistakes on the test set")
    return fig


def first_of_each_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The index of each class's first image: a fixed, unselected sample, one per class."""
    return torch.stack([(labels == c).nonzero()[0, 0] for c in range(num_classes) if (labels == c).any()])


def deskew_figure(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor) -> Figure:
    """Digits as read (top row, captioned with their class and shear) and as deskewed (bottom row)."""
    from matplotlib.figure import Figure

    alphas = shear(before.reshape(-1, 28, 28))[:, 0, 1]
    mosaic, tops = tiles(torch.cat([before, after]), cols=len(before), gap=(6, 16))
    fig = Figure(figsize=DESKEW_SIZE, dpi=DPI)
    ax = tiled_axes(fig, mosaic)
    show_images(ax, mosaic)
    for (x, y), label, alpha in zip(tops, labels.tolist(), alphas.tolist(), strict=False):
        ax.text(x, y, f"{label}, shear {alpha:+.2f}", ha="center", va="bottom", fontsize=8)
    for x, y in tops[len(before) :]:
        ax.text(x, y, "deskewed", ha="center", va="bottom", fontsize=8)
    fig.suptitle("Test digits as read (top) and deskewed (bottom): what the model reads")
    return fig


class ModelFigures(L.Callback):
    """Draws the figures when testing ends; saves them as PNG in `dirpath` and logs them to TensorBoard.

    The figures show the tested model (the best checkpoint, after fit) on the whole of the test loader it
    was tested on, on the first rank only. The weight templates need a linear network (`model/net=linear`);
    the deskewing figure, a model that deskews.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        shape = tuple(getattr(pl_module, "input_shape", MNIST_SHAPE))
        names = getattr(pl_module, "class_names", None)
        loaders = trainer.test_dataloaders
        if isinstance(loaders, (list, tuple)):
            if len(loaders) != 1:
                log.info("No figures: they are drawn for one test loader, and there are %d", len(loaders))
                return
            (loaders,) = loaders
        try:
            if loaders is None:  # Lightning's answer before a test loop has set its loaders up
                raise TypeError("there is no test loader")
            images, labels = all_batches(loaders)
            images = images.reshape(len(images), *shape)
        except (ValueError, TypeError, RuntimeError) as error:
            log.warning("No figures: test batches are not (images, labels) of %s images: %s", shape, error)
            return
        if images.dtype == torch.uint8:
            images = images.float().div(255.0)
        # `seen`: what the network reads. The tested model's `transform` and `net` are modules, which
        # nn.Module's attribute lookup (on a LightningModule, no particular model) types `Tensor | Module`.
        with torch.no_grad():
            seen = pl_module.transform(images.to(pl_module.device)).cpu()  # type: ignore[operator]
            probs = pl_module.net(seen.flatten(1).to(pl_module.device)).softmax(1).cpu()  # type: ignore[operator]
        num_classes = probs.shape[1]
        figures = {}
        if isinstance(pl_module.net, nn.Linear):
            figures["weight_templates"] = weight_templates(pl_module.net.weight, shape, names)
        matrix = confusion_matrix(probs.argmax(1), labels, num_classes)
        figures["confusion_matrix"] = confusion_figure(matrix, names)
        mistakes = confident_mistakes(probs, labels, math.prod(MISTAKES_GRID))
        figures["confident_mistakes"] = mistakes_figure(seen, labels, probs, mistakes, names, shape)
        if not isinstance(pl_module.transform, nn.Identity):
            picked = first_of_each_class(labels, num_classes)
            figures["deskewing"] = deskew_figure(images[picked], seen[picked], labels[picked])
        self.dirpath.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            self.save_and_log(trainer, name, render(fig))
        log.info("Figures: %s", self.dirpath)

    def save_and_log(self, trainer: L.Trainer, name: str, pixels: np.ndarray) -> None:
        from PIL import Image

        with replaced_atomically(self.dirpath / f"{name}.png") as tmp:  # whole or not at all
            Image.fromarray(pixels).save(tmp, format="PNG")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(f"figures/{name}", pixels, trainer.global_step, dataformats="HWC")
