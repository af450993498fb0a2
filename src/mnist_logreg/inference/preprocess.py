"""A person's digit image made into an MNIST image, the way MNIST itself was made.

MNIST's digits are bright ink on black, fitted into a 20x20 box with their aspect ratio kept (anti-aliased),
then placed in a 28x28 field so that their centre of mass falls on pixel (14, 14). A photo or a scan is
none of that: any size, RGB, dark ink on light or coloured paper, lit unevenly, cropped tight or loose,
written with a pen or a marker, with a stray mark beside it. Each step below undoes one difference:

1. Polarity. The paper is what most of the image's outer frame shows: even a digit cropped to its own ink
   leaves most of the frame to the paper, where most of the image can be ink. The ink is the extreme
   farther from the paper; dark ink on light paper from then on.
2. Light. The paper's brightness under each pixel is a morphological closing of the image (the strokes are
   narrower than its window, so it fills them in; a linear shadow passes through it unchanged), and a
   pixel's ink is how much darker it is than its own paper, relative to that paper: a shadow dims paper
   and ink alike, so it cancels out.
3. Noise. Otsu's threshold separates paper from ink; whatever lies within the paper's noise becomes 0 and
   the ink is stretched so that its strongest pixel is 1, as in MNIST. The noise is measured in grey
   levels, which a camera's noise keeps on dim paper too: a shadow makes it a larger share of the paper.
4. Stray marks. The ink's connected pieces are found; the heaviest one and those close to it are the digit.
5. Thick pens. A digit whose strokes are wider than nearly all of MNIST's is thinned, where the image is
   fine enough to take off less than an MNIST pixel.
6. MNIST's recipe: fitted into 20x20, centred by mass in 28x28.

So an MNIST digit rendered bigger (by a whole factor), inverted, shifted or in colour gets the same 28x28
image back (exactly, where the rendering loses nothing) and so the same prediction; docs/predict.md
measures each condition. No library does this whole recipe: Pillow decodes and resizes, torch does the
sliding-window work (max pooling is the morphological dilation). Pillow's MinFilter and MaxFilter give the
same images but sort every pixel's whole window, which made the light's closing ten times as slow and the
thinning six or more; neither library labels connected regions, hence the loop in `connected_regions`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from mnist_logreg.errors import UserError

SIZE = 28  # the field
BOX = 20  # the digit's longer side
CENTRE = 14.0  # where MNIST puts the centre of mass (measured on its test set: 13.99, 14.01)
# Larger images are shrunk first, by a whole factor: a 20-pixel digit needs no more, and every step below
# costs time per pixel.
MAX_SIDE = 1024
# The paper's brightness is smooth, so it is estimated on the image shrunk to this longer side, with a
# closing whose window is this share of the shrunk image's shorter side: wider than the strokes of a digit
# that fills the image, narrow enough to follow a shadow's edge.
LIGHT_GRID = 64
LIGHT_WINDOW = 0.5
NOISE_SIGMAS = 3.0  # paper pixels lie within this many robust standard deviations of the paper's median
CLEARANCE = 1 / 64  # the noise is measured on paper at least this share of the image's longer side from ink
# The darkest ink must be at least this much (of the full grey scale) darker than its paper: less is the
# paper's own grain or JPEG noise, and a photo of an empty page is reported as blank instead of labelled.
MIN_CONTRAST = 0.08
# Ink is at least this strong (the strongest is 1). Fainter pixels are resampling ringing and JPEG
# artefacts around the strokes, which would widen the ink's bounding box and shrink the digit; MNIST's own
# faintest edge pixels go with them.
FAINT = 0.1
# Pieces of ink closer than this share of the image's longer side are one piece (a broken stroke); pieces
# that reach within this share of the digit's size around the heaviest piece belong to the digit (the
# detached bar of a 5). Farther pieces are stray marks.
GROUPING = 1 / 64
NEAR = 0.25
# A digit whose strokes are wider than this (in pixels of the 20x20 box) is thinned by THIN_BY pixels on
# each side: few of MNIST's strokes are this wide, and a linear model reads a marker's digit as another.
# Thinning needs image pixels of at most 1 / THIN_MIN_SCALE of a box pixel; coarser images are kept as
# they are (so an MNIST digit enlarged by a small factor still gets its own image back).
THICK = 3.4
THIN_BY = 0.5
THIN_MIN_SCALE = 4


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
    """Luminance as uint8, shrunk to at most MAX_SIDE; a transparent background counts as white paper."""
    if image.mode.startswith("I"):  # 16-bit scans: Pillow's conversion to 8 bits would clip, not scale
        pixels = (np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
    elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    image = image.convert("L")
    if max(image.size) > MAX_SIDE:
        image = image.reduce(-(-max(image.size) // MAX_SIDE))  # the factor, rounded up
    return np.asarray(image)


def to_mnist(image: Image.Image) -> torch.Tensor:
    """The image as a 1 x 28 x 28 float32 tensor in [0, 1]: bright ink, fitted to 20x20, centred by mass."""
    ink = ink_strength(dark_ink_on_light(grayscale(image)))
    ink = crop_to_ink(digit_only(ink))
    ink = ink / ink.max()  # the strongest pixel may have been in a stray mark
    fitted = fit_into_box(ink)
    scale = max(ink.shape) / BOX  # image pixels per box pixel
    if scale >= THIN_MIN_SCALE and stroke_width(fitted) > THICK:
        thinned = eroded(ink, round(THIN_BY * scale))
        thinned[thinned < FAINT] = 0.0
        if thinned.any():  # strokes narrower than the erosion would vanish: keep them
            fitted = fit_into_box(crop_to_ink(thinned / thinned.max()))
    return torch.from_numpy(centre_by_mass(fitted)).unsqueeze(0)


def dark_ink_on_light(gray: np.ndarray) -> np.ndarray:
    """Inverted (in integers, so inverting twice is exact) when the ink is lighter than the paper."""
    frame = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    paper = int(np.median(frame))
    if int(gray.max()) - paper > paper - int(gray.min()):
        return 255 - gray
    return gray


def paper_brightness(gray: np.ndarray) -> np.ndarray:
    """The paper's grey level under each pixel: a closing (dilation, then erosion) of the shrunk image.

    The closing fills in dark marks narrower than its window and keeps a linear gradient exactly, with the
    edges padded by repetition so that the gradient goes on past them. It is computed on the image shrunk
    by averaging, resized back bilinearly (both keep a gradient too) and rounded to whole grey levels, so
    that even paper is exactly even.
    """
    height, width = gray.shape
    x = torch.from_numpy(gray.astype(np.float32))[None, None]
    factor = max(height, width) / LIGHT_GRID
    if factor > 1:
        x = F.interpolate(
            x, size=(max(1, round(height / factor)), max(1, round(width / factor))), mode="area"
        )
    half = max(1, round(LIGHT_WINDOW * min(x.shape[-2:]) / 2))
    x = F.pad(x, (2 * half,) * 4, mode="replicate")
    x = dilated(x, half)
    x = -dilated(-x, half)
    if factor > 1:
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return x[0, 0].round().clamp(min=1.0).numpy()


def dilated(x: torch.Tensor, half: int) -> torch.Tensor:
    """Maximum over each (2 half + 1)-pixel square that fits in `x` (so 2 half pixels smaller each way: the
    caller pads), taken along rows and then columns, which is the same and much cheaper."""
    size = 2 * half + 1
    return F.max_pool2d(F.max_pool2d(x, (size, 1), stride=1), (1, size), stride=1)


def ink_strength(gray: np.ndarray) -> np.ndarray:
    """How dark each pixel is against its own paper, 0 where it is paper, stretched to 1 at the strongest.

    The noise is measured in grey levels, with its sign, on the paper away from the ink. A camera's gamma
    curve makes its noise about as many grey levels on dim paper as on bright, so under a shadow the same
    noise is a larger share of the paper: each pixel's floor is the noise over its own paper. Paper brighter
    than its estimate is noise as much as paper darker: clipped at 0, half the noise would read as none.
    The strokes' anti-aliased fringes and the JPEG ringing beside them are not noise.
    """
    paper = paper_brightness(gray)
    darkness = paper - gray
    contrast = np.clip(darkness / paper, 0.0, 1.0).astype(np.float32)
    on_paper = contrast < otsu_threshold(contrast)
    # A coarse grid, as in `digit_only`: paper is far from the ink in a cell with no ink in it or beside it.
    height, width = gray.shape
    cell = max(1, round(CLEARANCE * max(height, width)))
    inked = F.max_pool2d(torch.from_numpy(~on_paper).float()[None, None], cell, ceil_mode=True)
    near = F.max_pool2d(inked, 3, stride=1, padding=1)[0, 0] > 0
    far = on_paper & ~near.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:height, :width].numpy()
    noise = darkness[far] if far.any() else darkness.ravel()  # all one level: a blank image
    median = float(np.median(noise))
    spread = 1.4826 * float(np.median(np.abs(noise - median)))  # robust standard deviation
    ink = np.clip(contrast - ((median + NOISE_SIGMAS * spread) / paper).astype(np.float32), 0.0, None)
    if float(ink.max()) <= 0 or float(darkness.max()) < MIN_CONTRAST * 255:
        raise ImageError("no digit found: the image is blank")
    ink /= ink.max()
    ink[ink < FAINT] = 0.0
    return ink


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold on values in [0, 1]: the cut that best separates them into two classes."""
    levels = np.arange(256)
    counts = np.bincount(np.rint(values.ravel() * 255).astype(np.intp), minlength=256)
    below = np.cumsum(counts)
    above = below[-1] - below
    moment = np.cumsum(counts * levels)
    mean_below = moment / np.maximum(below, 1)
    mean_above = (moment[-1] - moment) / np.maximum(above, 1)
    between = below * above * (mean_below - mean_above) ** 2  # the variance between the classes
    return (int(np.argmax(between)) + 0.5) / 255  # between the last level below and the first above


def digit_only(ink: np.ndarray) -> np.ndarray:
    """The ink without the pieces far from the digit, the digit being the heaviest piece and its neighbours.

    Pieces are the connected regions of a coarse grid (a cell holds ink if any of its pixels does), so that
    a stroke broken by a pixel or two stays one piece.
    """
    height, width = ink.shape
    cell = max(1, round(GROUPING * max(height, width)))
    x = torch.from_numpy(ink)[None, None]
    inked = F.max_pool2d(x, cell, ceil_mode=True)[0, 0] > 0
    mass = F.avg_pool2d(x, cell, ceil_mode=True)[0, 0]
    labels = connected_regions(inked)
    ids, index = torch.unique(labels, return_inverse=True)
    weights = torch.zeros(len(ids)).index_add_(0, index.flatten(), mass.flatten())
    weights[ids == 0] = -1.0  # 0 labels no piece
    heaviest = labels == ids[weights.argmax()]
    rows, cols = heaviest.any(1).nonzero()[:, 0], heaviest.any(0).nonzero()[:, 0]
    margin = round(NEAR * max(int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1))
    around = torch.zeros_like(inked)
    around[
        max(int(rows[0]) - margin, 0) : int(rows[-1]) + margin + 1,
        max(int(cols[0]) - margin, 0) : int(cols[-1]) + margin + 1,
    ] = True
    near = torch.zeros(int(labels.max()) + 1, dtype=torch.bool)
    near[labels[around & inked]] = True
    kept = near[labels] & inked
    kept = kept.repeat_interleave(cell, 0).repeat_interleave(cell, 1)[:height, :width]
    return ink * kept.numpy()


def connected_regions(mask: torch.Tensor) -> torch.Tensor:
    """A label per 8-connected region of `mask` (0 outside it): each cell takes its neighbours' largest
    label until none changes, which takes as many passes as the longest path through a region."""
    labels = torch.arange(1, mask.numel() + 1, dtype=torch.float64).reshape(mask.shape) * mask
    while True:
        grown = F.max_pool2d(labels[None, None], 3, stride=1, padding=1)[0, 0] * mask
        if torch.equal(grown, labels):
            return labels.long()
        labels = grown


def crop_to_ink(ink: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(ink.any(axis=1))[0], np.nonzero(ink.any(axis=0))[0]
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(ink: np.ndarray) -> float:
    """The strokes' mean width, as if the ink were one rectangle: its area over its outline, solved.

    The area is the ink's mass and the outline its total gradient, which counts a slanted edge at its
    length (counting boundary pixels would count its staircase). For a w x L rectangle the outline is
    2(w + L) and the area wL, so w = (outline - sqrt(outline^2 - 16 area)) / 4.
    """
    rows, cols = np.gradient(np.pad(ink.astype(np.float64), 1))
    outline = float(np.hypot(rows, cols).sum())
    area = float(ink.sum())
    return (outline - np.sqrt(max(outline**2 - 16 * area, 0.0))) / 4


def eroded(ink: np.ndarray, radius: int) -> np.ndarray:
    """Minimum over a (2 radius + 1)-pixel square, with paper (0) outside the image."""
    x = torch.from_numpy(np.pad(ink, radius))[None, None]
    return -dilated(-x, radius)[0, 0].numpy()


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
