"""A matplotlib figure as pixels: what the PNG files, TensorBoard and the demo page show, alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def render(fig: Figure) -> np.ndarray:
    """The figure as an H x W x 3 uint8 array: the PNG and TensorBoard get the same pixels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
