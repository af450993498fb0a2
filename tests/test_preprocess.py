"""A person's image made MNIST-like: exact pixels on synthetic shapes, labels kept on MNIST renderings."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps
from torchvision.datasets import MNIST

from helpers import ROOT
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.inference.preprocess import ImageError, load_image, to_mnist


def paper(
    size: tuple[int, int] = (100, 60), ink_box: tuple[int, int, int, int] = (30, 10, 50, 50)
) -> Image.Image:
    """Dark ink (a filled rectangle: left, top, right, bottom) on white paper, as a photo of a page is."""
    pixels = np.full((size[1], size[0]), 255, dtype=np.uint8)
    left, top, right, bottom = ink_box
    pixels[top:bottom, left:right] = 0
    return Image.fromarray(pixels)


def test_a_rectangle_is_inverted_fitted_to_20_pixels_and_centred_by_mass() -> None:
    out = to_mnist(paper())  # 20 wide, 40 tall
    assert out.shape == (1, 28, 28) and out.dtype == torch.float32
    expected = torch.zeros(28, 28)
    # Halved to 10 x 20; centre of mass (9.5, 4.5) moved onto (14, 14): rows 5-24, columns 10-19.
    expected[5:25, 10:20] = 1.0
    assert torch.equal(out[0], expected)


def test_aspect_ratio_is_kept_for_a_thin_stroke() -> None:
    out = to_mnist(paper(size=(300, 300), ink_box=(100, 50, 108, 250)))  # 8 x 200: a "1"
    rows, cols = out[0].nonzero(as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 1)


def test_light_ink_on_dark_paper_and_dark_ink_on_light_paper_agree() -> None:
    dark_on_light = paper()
    assert torch.equal(to_mnist(ImageOps.invert(dark_on_light)), to_mnist(dark_on_light))


def test_a_16_bit_scan_is_scaled_not_clipped(tmp_path: Path) -> None:
    # Grey paper at 40000 and ink at 10000 of 65535: clipped to 8 bits, both would be 255 (a blank page).
    deep = np.where(np.asarray(paper()) > 0, 40000, 10000).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "scan.png")
    with load_image(tmp_path / "scan.png") as image:
        assert image.mode.startswith("I")
        assert torch.equal(to_mnist(image), to_mnist(paper()))


def test_grey_noisy_paper_gives_the_clean_digit() -> None:
    rng = np.random.default_rng(0)
    clean = np.asarray(paper(), dtype=np.float64)
    photo = 150 + (clean - 255) * 0.4 + rng.normal(0, 5, clean.shape)  # grey paper, pencil, sensor noise
    out = to_mnist(Image.fromarray(photo.clip(0, 255).astype(np.uint8)))
    assert torch.equal(out > 0.5, to_mnist(paper()) > 0.5)


def test_transparent_background_counts_as_paper() -> None:
    ink = np.zeros((60, 100, 4), dtype=np.uint8)  # black ink drawn on a transparent layer
    ink[10:50, 30:50, 3] = 255
    assert torch.equal(to_mnist(Image.fromarray(ink, mode="RGBA")), to_mnist(paper()))


def ring(margin: int) -> Image.Image:
    """A "0" drawn with a marker: a thick ellipse, `margin` pixels of paper around it."""
    image = Image.new("L", (60 + 2 * margin, 80 + 2 * margin), 255)
    ImageDraw.Draw(image).ellipse((margin, margin, margin + 59, margin + 79), outline=0, width=18)
    return image


def test_a_digit_cropped_to_its_ink_reads_as_on_a_page() -> None:
    tight = ring(margin=0)
    assert (np.asarray(tight) < 128).mean() > 0.5  # mostly ink: the image's median is not the paper
    assert torch.equal(to_mnist(tight), to_mnist(ring(margin=20)))


def test_a_linear_shadow_across_the_page_cancels_out() -> None:
    clean = np.asarray(paper(size=(200, 120), ink_box=(60, 20, 100, 100)), dtype=np.float64)
    light = np.linspace(0.9, 0.4, 200)  # left to right, on paper and ink alike
    shaded = Image.fromarray((clean * light).round().astype(np.uint8))
    assert torch.equal(to_mnist(shaded), to_mnist(Image.fromarray(clean.astype(np.uint8))))


def test_sensor_noise_under_a_shadow_leaves_the_digit_its_size() -> None:
    # The same noise, in grey levels, is a larger share of the paper where the shadow dims it: specks there
    # taken for ink would stretch the digit's box and shrink the digit (to 11 x 3 pixels here).
    clean = np.asarray(paper(size=(400, 300), ink_box=(200, 60, 240, 220)), dtype=np.float64)  # 40 x 160
    light = np.linspace(0.9, 0.4, 400)
    grain = np.random.default_rng(0).normal(0, 8, clean.shape)
    out = to_mnist(Image.fromarray((clean * light + grain).round().clip(0, 255).astype(np.uint8)))
    rows, cols = (out[0] > 0.5).nonzero(as_tuple=True)
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 5)


def test_stray_marks_away_from_the_digit_are_left_out() -> None:
    page = paper(size=(200, 120), ink_box=(60, 20, 100, 100))
    clean = to_mnist(page)
    draw = ImageDraw.Draw(page)
    draw.rectangle((5, 5, 9, 9), fill=0)  # a speck in a corner
    draw.line((150, 110, 195, 105), fill=0, width=2)  # a pen line along the edge
    assert torch.equal(to_mnist(page), clean)


def test_a_marker_stroke_is_thinned_where_the_image_is_fine_enough() -> None:
    def bar(scale: int) -> Image.Image:  # a "1" 6 box pixels wide (MNIST's are about 2), at `scale`x
        return paper(size=(40 * scale, 40 * scale), ink_box=(17 * scale, 10 * scale, 23 * scale, 30 * scale))

    def width(image: Image.Image) -> int:
        return int((to_mnist(image)[0] > 0.5).any(0).sum())

    assert width(bar(1)) == width(bar(2)) == 6  # too coarse to thin by less than a pixel: as it is
    assert width(bar(10)) == 5  # half a box pixel off each side


def test_a_large_photo_is_shrunk_by_a_whole_factor_first() -> None:
    drawing = ring(margin=30)  # 120 x 140
    huge = drawing.resize((120 * 30, 140 * 30), Image.Resampling.NEAREST)  # 4 times MAX_SIDE
    assert torch.equal(to_mnist(huge), to_mnist(drawing.resize((120 * 6, 140 * 6), Image.Resampling.NEAREST)))


def test_a_photo_of_an_empty_page_is_blank() -> None:
    grain = np.random.default_rng(0).normal(0, 3, (300, 400))  # grey paper and a camera's noise
    with pytest.raises(ImageError, match="blank"):
        to_mnist(Image.fromarray((200 + grain).round().astype(np.uint8)))


def test_unusable_files_raise_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="blank"):
        to_mnist(Image.new("L", (40, 40), 255))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="cannot be read as an image"):
        load_image(text)
    png = tmp_path / "cut.png"
    paper().save(png)
    png.write_bytes(png.read_bytes()[:100])
    with pytest.raises(ImageError, match="cannot be read as an image"):
        load_image(png)


# On real MNIST test digits and the model trained on MNIST.


@pytest.fixture(scope="module")
def digits(trained_run: Path) -> tuple[np.ndarray, torch.Tensor]:
    test = MNIST(str(ROOT / "data"), train=False)  # extracted by the training run
    return test.data[:300].numpy(), test.targets[:300]


def jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return Image.open(io.BytesIO(buffer.getvalue()))


def scan(image: Image.Image) -> Image.Image:
    """An MNIST digit as a person might photograph it: enlarged, dark on white, off-centre, RGB, JPEG."""
    page = Image.new("L", (400, 300), 255)
    page.paste(ImageOps.invert(image.resize((150, 150), Image.Resampling.BICUBIC)), (170, 40))
    return jpeg(page.convert("RGB"))


LOSSLESS = {
    "inverted": ImageOps.invert,
    "rgb": lambda image: image.convert("RGB"),
    "shifted on a larger canvas": lambda image: ImageOps.expand(image, (37, 5, 11, 40)),
    "enlarged 3x": lambda image: image.resize((84, 84), Image.Resampling.NEAREST),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_renderings_give_the_digits_own_image(digits, name: str) -> None:
    images, _ = digits
    render = LOSSLESS[name]
    for pixels in images[:100]:
        digit = Image.fromarray(pixels)
        assert torch.equal(to_mnist(render(digit)), to_mnist(digit))


@pytest.mark.slow
def test_mnist_digits_and_their_scans_keep_their_label(trained_run: Path, digits) -> None:
    model = load_model(trained_run / "checkpoints" / "best.ckpt")
    images, labels = digits
    with torch.no_grad():
        raw = model(torch.from_numpy(images).float() / 255).argmax(1)
        own = model(torch.stack([to_mnist(Image.fromarray(p)) for p in images])).argmax(1)
        scanned = model(torch.stack([to_mnist(scan(Image.fromarray(p))) for p in images])).argmax(1)
    # The digit preprocessed as itself: only the faintest edge pixels go (measured: 299 of 300 agree).
    assert (own == raw).float().mean() >= 0.98
    # A lossy scan moves the digit by up to a pixel, which a linear model feels (measured: 95% agree).
    assert (scanned == raw).float().mean() >= 0.90
    raw_accuracy = (raw == labels).float().mean()
    assert (scanned == labels).float().mean() >= raw_accuracy - 0.03
