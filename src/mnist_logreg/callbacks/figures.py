"""What the trained classifier looks like: weight templates, confusion matrix, most confident mistakes,
and, for a model trained on deskewed images, test digits before and after deskewing.

A linear classifier is the one model whose weights a person can read: class c's logit is the sum of the
image's pixels weighted by row c of the weight matrix, so each row, drawn as 28x28, is a template of where
ink speaks for the class (red) or against it (blue).

The figures are drawn once, when testing ends, for the tested model on the whole test set in one forward
pass: nothing runs in the training loop. They are drawn on the Agg canvas directly, without pyplot's global
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


def tiles(
    images: torch.Tensor, cols: int, gap: tuple[int, int], rows: int | None = None
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """28x28 images laid out row by row in one array, NaN around them, and where each one's caption goes.

    Each row of tiles has `gap[1]` empty pixels above it for captions; tiles are `gap[0]` pixels apart.
    `rows` fixes the array's height (so that a few images are drawn as large as a full grid's).

    One image on one Axes: matplotlib spends more on an Axes (its spines, ticks and layout) than on drawing
    a 28x28 image, so a grid of small Axes costs several times as much as the same grid as one image.
    """
    rows = rows or math.ceil(len(images) / cols)
    gap_x, gap_y = gap
    mosaic = np.full((rows * (28 + gap_y), cols * (28 + gap_x) - gap_x), np.nan, dtype=np.float32)
    tops = []
    for i, image in enumerate(images):
        top, left = gap_y + (i // cols) * (28 + gap_y), (i % cols) * (28 + gap_x)
        mosaic[top : top + 28, left : left + 28] = image.reshape(28, 28).numpy()
        tops.append((left + 13.5, top - 0.5))
    return mosaic, tops


def tiled_axes(fig: Figure, mosaic: np.ndarray) -> Axes:
    """One Axes under the title, without frame or ticks, whose data coordinates are the mosaic's pixels."""
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.84))
    ax.set_axis_off()
    ax.set_xlim(-0.5, mosaic.shape[1] - 0.5)
    ax.set_ylim(mosaic.shape[0] - 0.5, -0.5)
    return ax


def weight_templates(weights: torch.Tensor) -> Figure:
    """One 28x28 image per class, all on one colour scale that is symmetric about zero."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    weights = weights.detach().float().cpu()
    limit = float(weights.abs().max()) or 1.0  # symmetric limits put zero weight at the map's centre
    mosaic, tops = tiles(weights, cols=(len(weights) + 1) // 2, gap=(3, 7))
    fig = Figure(figsize=WEIGHTS_SIZE, dpi=DPI)
    ax = tiled_axes(fig, mosaic)
    cmap = colormaps[WEIGHTS_CMAP].with_extremes(bad="white")  # the gaps between templates
    image = ax.imshow(mosaic, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    for digit, (x, y) in enumerate(tops):
        ax.text(x, y, str(digit), ha="center", va="bottom", fontsize=12)
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight", pad=0.01)
    fig.suptitle("Weight templates: ink on red pixels raises the class's logit, ink on blue lowers it")
    return fig


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts: row = true class, column = predicted class."""
    return MulticlassConfusionMatrix(num_classes, validate_args=False)(preds, labels)


def confusion_figure(matrix: torch.Tensor) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=CONFUSION_SIZE, dpi=DPI)
    ax = fig.subplots()
    with warnings.catch_warnings():
        # torchmetrics hands matplotlib a tensor, whose __array__ predates numpy 2's `copy` argument.
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        MulticlassConfusionMatrix(len(matrix)).plot(matrix, ax=ax, cmap="Blues")
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
    images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, indices: torch.Tensor
) -> Figure:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=MISTAKES_SIZE, dpi=DPI)
    if len(indices) == 0:
        fig.suptitle("No mistakes on the test set")
        return fig
    confidence, preds = probs.max(1)
    rows, cols = MISTAKES_GRID
    indices = indices[: rows * cols]
    mosaic, tops = tiles(images[indices], cols=cols, gap=(6, 16), rows=rows)
    ax = tiled_axes(fig, mosaic)
    gray = colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=gray, vmin=0.0, vmax=1.0, interpolation="nearest")
    for (x, y), i in zip(tops, indices.tolist(), strict=True):
        ax.text(
            x,
            y,
            f"true {labels[i]}, said {preds[i]}\n{confidence[i]:.1%}",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    fig.suptitle(f"The {len(indices)} most confident mistakes on the test set")
    return fig


def first_of_each_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The index of each class's first image: a fixed, unselected sample, one per class."""
    return torch.stack([(labels == c).nonzero()[0, 0] for c in range(num_classes) if (labels == c).any()])


def deskew_figure(before: torch.Tensor, after: torch.Tensor, labels: torch.Tensor) -> Figure:
    """Digits as read (top row, captioned with their class and shear) and as deskewed (bottom row)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    alphas = shear(before.reshape(-1, 28, 28))[:, 0, 1]
    mosaic, tops = tiles(torch.cat([before, after]), cols=len(before), gap=(6, 16))
    fig = Figure(figsize=DESKEW_SIZE, dpi=DPI)
    ax = tiled_axes(fig, mosaic)
    ax.imshow(mosaic, cmap=colormaps["gray_r"].with_extremes(bad="white"), vmin=0.0, vmax=1.0)
    for (x, y), label, alpha in zip(tops, labels.tolist(), alphas.tolist(), strict=False):
        ax.text(x, y, f"{label}, shear {alpha:+.2f}", ha="center", va="bottom", fontsize=8)
    for x, y in tops[len(before) :]:
        ax.text(x, y, "deskewed", ha="center", va="bottom", fontsize=8)
    fig.suptitle("Test digits as read (top) and deskewed (bottom): what the model reads")
    return fig


class ModelFigures(L.Callback):
    """Draws the figures when testing ends; saves them as PNG in `dirpath` and logs them to TensorBoard.

    The figures show the tested model (the best checkpoint, after fit) on the whole test split of the
    data module, on the first rank only. The weight templates need a linear network (`model/net=linear`);
    the deskewing figure, a model that deskews.
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        images, labels = trainer.datamodule.splits["test"]
        with torch.no_grad():
            seen = pl_module.transform(images.to(pl_module.device)).cpu()  # what the network reads
            probs = pl_module.net(seen.flatten(1).to(pl_module.device)).softmax(1).cpu()
        images, labels = images.cpu(), labels.cpu()
        num_classes = probs.shape[1]
        figures = {}
        if isinstance(pl_module.net, nn.Linear):
            figures["weight_templates"] = weight_templates(pl_module.net.weight)
        figures["confusion_matrix"] = confusion_figure(confusion_matrix(probs.argmax(1), labels, num_classes))
        figures["confident_mistakes"] = mistakes_figure(
            seen, labels, probs, confident_mistakes(probs, labels, math.prod(MISTAKES_GRID))
        )
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
