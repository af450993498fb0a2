"""A person's digit image made into an MNIST image, the way MNIST itself was made.

MNIST's digits are bright ink on black, fitted into a 20x20 box with their aspect ratio kept (anti-aliased),
then placed in a 28x28 field so that their centre of mass falls on pixel (14, 14). A photo or a scan is
none of that: any size, RGB, dark ink on light paper, anywhere on the page. The steps below undo each
difference, so that an MNIST digit rendered bigger, inverted, shifted or in colour gets the same 28x28
image back (exactly, where the rendering loses nothing) and so the same prediction. No library does this
whole recipe; Pillow does the decoding and the anti-aliased resizing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from mnist_logreg.errors import UserError

SIZE = 28  # the field
BOX = 20  # the digit's longer side
CENTRE = 14.0  # where MNIST puts the centre of mass (measured on its test set: 13.99, 14.01)
NOISE_SIGMAS = 3.0  # background pixels lie within this many robust standard deviations of the median
# Ink is at least this bright (the brightest is 1). Fainter pixels are resampling ringing and JPEG
# artefacts around the strokes, which would widen the ink's bounding box and shrink the digit: with
# this threshold, enlarged (Lanczos) or JPEG-compressed MNIST digits get the digit's own prediction 93-95%
# of the time instead of 71-85% (600 test digits), at the cost of MNIST's own faintest edge pixels.
FAINT = 0.1


class ImageError(UserError):
    """A file that cannot be read as an image, or an image with no digit in it."""


def load_image(path: str | Path) -> Image.Image:
    """Decode an image file, turned upright as its camera recorded (EXIF orientation)."""
    try:
        with Image.open(path) as image:
            image.load()
            return ImageOps.exif_transpose(image)
    # Pillow reports unknown formats as UnidentifiedImageError (an OSError), broken files as OSError,
    # SyntaxError or ValueError, and huge ones as DecompressionBombError.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = "not an image Pillow can read" if isinstance(error, Image.UnidentifiedImageError) else error
        raise ImageError(f"cannot be read as an image ({reason})") from None


def grayscale(image: Image.Image) -> np.ndarray:
    """Luminance as uint8; a transparent background counts as white paper."""
    if image.mode.startswith("I"):  # 16-bit scans: Pillow's conversion to 8 bits would clip, not scale
        return (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    return np.asarray(image.convert("L"))


def to_mnist(image: Image.Image) -> torch.Tensor:
    """The image as a 1 x 28 x 28 float32 tensor in [0, 1]: bright ink, fitted to 20x20, centred by mass."""
    gray = grayscale(image)
    # Most of a digit image is background: the median. Ink is the extreme farthest from it.
    median = int(np.median(gray))
    if median - int(gray.min()) > int(gray.max()) - median:
        gray = 255 - gray  # dark ink on light paper: invert in integers, so inverting twice is exact
    pixels = gray.astype(np.float32) / 255.0

    # Paper is not uniformly black: whatever lies within the noise of the background becomes 0, the ink
    # is stretched so that its brightest pixel is 1, as in MNIST, and its faintest fringe is dropped.
    background = float(np.median(pixels))
    spread = 1.4826 * float(np.median(np.abs(pixels - background)))  # robust standard deviation
    floor = background + NOISE_SIGMAS * spread
    peak = float(pixels.max())
    if peak <= floor:
        raise ImageError("no digit found: the image is blank")
    pixels = np.clip((pixels - floor) / (peak - floor), 0.0, 1.0)
    pixels[pixels < FAINT] = 0.0

    rows, cols = np.nonzero(pixels.any(axis=1))[0], np.nonzero(pixels.any(axis=0))[0]
    ink = pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    ink = fit_into_box(ink)
    return torch.from_numpy(centre_by_mass(ink)).unsqueeze(0)


def fit_into_box(ink: np.ndarray) -> np.ndarray:
    """Scale so that the longer side is 20 pixels, keeping the aspect ratio; brightest pixel back to 1.

    Shrinking averages over each output pixel's area (Pillow's BOX filter), which is exact for an image
    enlarged by a whole factor; enlarging interpolates (BILINEAR). Both keep values within [0, 1].
    """
    height, width = ink.shape
    scale = BOX / max(height, width)
    if scale == 1.0:
        return ink
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    resized = np.asarray(Image.fromarray(ink).resize(size, method), dtype=np.float32)
    return resized / resized.max()


def centre_by_mass(ink: np.ndarray) -> np.ndarray:
    """Paste into the 28x28 field so that the centre of mass lands on (14, 14), keeping all the ink inside."""
    height, width = ink.shape
    mass = ink.sum(dtype=np.float64)
    centre_row = (ink.sum(axis=1, dtype=np.float64) @ np.arange(height)) / mass
    centre_col = (ink.sum(axis=0, dtype=np.float64) @ np.arange(width)) / mass
    top = min(max(int(np.floor(CENTRE - centre_row + 0.5)), 0), SIZE - height)
    left = min(max(int(np.floor(CENTRE - centre_col + 0.5)), 0), SIZE - width)
    field = np.zeros((SIZE, SIZE), dtype=np.float32)
    field[top : top + height, left : left + width] = ink
    return field
