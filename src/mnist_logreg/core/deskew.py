"""Deskewing: each digit sheared so that its principal axis is vertical and its centre of mass centred.

A linear classifier has one template per class, so a slanted 1 or 7 misses its template; straightening
every image before the classifier sees it removes most of that variation (LeCun et al.'s table lists a
linear classifier on deskewed images). The shear comes from the image's second moments: with the centre
of mass at (cx, cy), `alpha = mu11 / mu02` is how far the ink moves sideways per row, and sampling the
image at `x + alpha * (y - centre)` makes the cross moment mu11 zero. Torch operations only, for a whole
batch at once, so the same module runs in the model's forward pass and inside the ONNX graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 28
CENTRE = 14.0  # where MNIST itself puts the centre of mass (see preprocess.py): upright digits stay put
# The square of the smallest spread (in pixels) along y that a shear is computed from. Ink confined to one
# row has no vertical axis to straighten; its cross moment is zero too (Cauchy-Schwarz), so it gets none.
MIN_MU02 = 1e-2


class Deskew(nn.Module):
    """Deskews images shaped `N x 784` or `N x 1 x 28 x 28`, pixels in [0, 1]; returns the same shape.

    Bilinear sampling (`F.affine_grid` + `F.grid_sample`) of the sheared and shifted image; ink moved out
    of the field is lost and the field around it is zero, as MNIST's background.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.reshape(-1, SIZE, SIZE)
        grid = F.affine_grid(shear(batch), [batch.shape[0], 1, SIZE, SIZE], align_corners=False)
        out = F.grid_sample(batch.unsqueeze(1), grid, "bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(images.shape)


def shear(images: torch.Tensor) -> torch.Tensor:
    """The `N x 2 x 3` affine matrices (in `affine_grid`'s normalised coordinates) that deskew `images`.

    Output pixel (x, y) reads input pixel (x + alpha * (y - CENTRE) + cx - CENTRE, y + cy - CENTRE): its
    cross moment is mu11 - alpha * mu02 = 0, and its centre of mass lands on (CENTRE, CENTRE).
    """
    coords = torch.arange(SIZE, dtype=images.dtype, device=images.device)
    rows, cols = images.sum(2), images.sum(1)  # N x 28: the ink in each row, in each column
    mass = rows.sum(1, keepdim=True).clamp_min(torch.finfo(images.dtype).tiny)  # a blank image: no NaN
    cy = (rows * coords).sum(1, keepdim=True) / mass
    cx = (cols * coords).sum(1, keepdim=True) / mass
    dy, dx = coords - cy, coords - cx  # N x 28
    mu02 = (rows * dy * dy).sum(1) / mass.squeeze(1)
    mu11 = (images * dy.unsqueeze(2) * dx.unsqueeze(1)).sum((1, 2)) / mass.squeeze(1)
    alpha = mu11 / mu02.clamp_min(MIN_MU02)
    # Pixel coordinates p to normalised ones: (2p + 1) / SIZE - 1, so one pixel is 2 / SIZE.
    pixel = 2.0 / SIZE
    centre = (2.0 * CENTRE + 1.0) / SIZE - 1.0
    ones, zeros = torch.ones_like(alpha), torch.zeros_like(alpha)
    shift_x = (cx.squeeze(1) - CENTRE) * pixel - alpha * centre
    shift_y = (cy.squeeze(1) - CENTRE) * pixel
    return torch.stack([torch.stack([ones, alpha, shift_x], 1), torch.stack([zeros, ones, shift_y], 1)], 1)
