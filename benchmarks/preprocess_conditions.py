"""How well `predict.py` reads MNIST test digits made to look like a person's photos, condition by condition.

    python benchmarks/preprocess_conditions.py [--count 1000] [--start 0] [--ckpt best.ckpt] [--before REF..]

Each condition renders a test digit as a photo or a scan might show it (one change from the plain scan
per row, but sensor noise is shown over a shadow, where the paper is dim; several changes in the last) and
scores the share of digits that `to_mnist` and the model give the prediction the clean 28x28 digit gets;
an image refused ("no digit found") counts as a miss. Without `--ckpt` it first trains the tests' short
checkpoint (`trained_run` in tests/conftest.py: 1 epoch of 100 batches, lr 0.1) into a temporary folder.
`--before REF` adds a column for the preprocessing as it was at a git commit (one per REF), run in the
same process on the same images. The table is printed in Markdown (docs/predict.md);
tests/test_preprocess_conditions.py holds each row to the goal.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from torchvision.datasets import MNIST

from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.errors import UserError
from mnist_logreg.inference.preprocess import to_mnist

ROOT = Path(__file__).resolve().parents[1]
SHORT_RUN = (
    "optimizer.lr=0.1",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=100",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar.refresh_rate=0",
)
PAGE = (400, 300)  # a photo of a page, the digit 150 pixels tall a little right of centre
DIGIT_SIZE, DIGIT_AT = 150, (170, 40)
PAPERS = [(250, 232, 120), (170, 205, 240), (246, 182, 200), (185, 225, 170), (255, 200, 140)]
PEN = (25, 30, 70)  # blue-black ink
# A camera's sensor noise, in grey levels of each colour channel: the grain of a phone photo in dim indoor
# light. The camera's gamma curve makes the photon noise about as strong on dim paper as on bright paper.
NOISE = 8


def jpeg(image: Image.Image, quality: int = 85) -> Image.Image:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def enlarged(pixels: np.ndarray) -> Image.Image:
    """The digit at the page's scale, still bright ink on black (0-255): how much ink covers each pixel."""
    return Image.fromarray(pixels).resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BICUBIC)


def on_page(
    ink: Image.Image, paper: tuple[int, ...] = (255, 255, 255), pen: tuple[int, ...] = (0, 0, 0)
) -> Image.Image:
    """Ink coverage (L) laid on a page of `paper` colour in `pen` colour, at the digit's place."""
    coverage = Image.new("L", PAGE, 0)
    coverage.paste(ink, DIGIT_AT)
    return Image.composite(Image.new("RGB", PAGE, pen), Image.new("RGB", PAGE, paper), coverage)


def scan(pixels: np.ndarray, i: int) -> Image.Image:
    """Today's case: enlarged, dark on white, off-centre on a page, RGB, JPEG."""
    return jpeg(on_page(enlarged(pixels)))


def tight_crop(pixels: np.ndarray, i: int) -> Image.Image:
    """Cropped to the digit's ink with no margin: the frame of its non-zero pixels, enlarged."""
    rows, cols = np.nonzero(pixels.any(axis=1))[0], np.nonzero(pixels.any(axis=0))[0]
    scale = DIGIT_SIZE / 28
    box = (round(cols[0] * scale), round(rows[0] * scale), round((cols[-1] + 1) * scale))
    box += (round((rows[-1] + 1) * scale),)
    return jpeg(ImageOps.invert(enlarged(pixels).crop(box)))


def marker(pixels: np.ndarray) -> Image.Image:
    """The enlarged digit with every stroke widened by about one MNIST pixel on each side."""
    return enlarged(pixels).filter(ImageFilter.MaxFilter(11))


def thick(pixels: np.ndarray, i: int) -> Image.Image:
    return jpeg(on_page(marker(pixels)))


def lit(page: Image.Image, light: np.ndarray) -> Image.Image:
    """The page under light of `light` (0-1) at each pixel: paper and ink dimmed alike."""
    pixels = np.asarray(page, dtype=np.float32) * light[..., None]
    return Image.fromarray(pixels.round().astype(np.uint8))


def across_page(i: int) -> np.ndarray:
    """Distance across the page (0 to 1 from side to side), in one of eight directions."""
    angle = np.pi / 4 * (i % 8)
    y, x = np.mgrid[0 : PAGE[1], 0 : PAGE[0]]
    along = (x - PAGE[0] / 2) * np.cos(angle) + (y - PAGE[1] / 2) * np.sin(angle)
    return (along - along.min()) / (along.max() - along.min())


def shadow(pixels: np.ndarray, i: int) -> Image.Image:
    """Light falling linearly from 90% on one side of the page to 40% on the other."""
    return jpeg(lit(on_page(enlarged(pixels)), 0.9 - 0.5 * across_page(i)))


def noisy_shadow(pixels: np.ndarray, i: int) -> Image.Image:
    """The linear shadow, photographed with sensor noise: the paper on its dim side is grainy."""
    page = np.asarray(lit(on_page(enlarged(pixels)), 0.9 - 0.5 * across_page(i)), dtype=np.float32)
    grain = NOISE * np.random.default_rng(i).standard_normal(page.shape, dtype=np.float32)
    return jpeg(Image.fromarray((page + grain).round().clip(0, 255).astype(np.uint8)))


def shadow_edge(pixels: np.ndarray, i: int) -> Image.Image:
    """A phone's shadow: 90% light, 45% past a soft edge across the page's middle."""
    edge = 1 / (1 + np.exp(-(across_page(i) - 0.5) * 30))
    return jpeg(lit(on_page(enlarged(pixels)), 0.9 - 0.45 * edge))


def stray_marks(pixels: np.ndarray, i: int) -> Image.Image:
    """Specks of ink and a pen line away from the digit."""
    page = on_page(enlarged(pixels))
    draw = ImageDraw.Draw(page)
    rng = np.random.default_rng(i)
    for _ in range(3):
        x, y = int(rng.integers(0, 130)), int(rng.integers(0, 290))  # left of the digit
        draw.ellipse((x, y, x + int(rng.integers(3, 9)), y + int(rng.integers(3, 9))), fill="black")
    draw.line((330, 280, 395, 270), fill="black", width=3)
    return jpeg(page)


def coloured_paper(pixels: np.ndarray, i: int) -> Image.Image:
    return jpeg(on_page(enlarged(pixels), paper=PAPERS[i % len(PAPERS)], pen=PEN))


def light_on_dark(pixels: np.ndarray, i: int) -> Image.Image:
    """Chalk on a blackboard."""
    return jpeg(on_page(enlarged(pixels), paper=(40, 52, 46), pen=(235, 235, 225)))


def phone_photo(pixels: np.ndarray, i: int) -> Image.Image:
    """All at once: a marker on coloured paper, in a linear shadow, cropped to the ink."""
    ink = marker(pixels)
    page = on_page(ink, paper=PAPERS[i % len(PAPERS)], pen=PEN)
    left, top, right, bottom = ink.getbbox()
    x, y = DIGIT_AT
    page = lit(page, 0.9 - 0.5 * across_page(i)).crop((x + left, y + top, x + right, y + bottom))
    return jpeg(page)


def as_is(pixels: np.ndarray, i: int) -> Image.Image:
    return Image.fromarray(pixels)


CONDITIONS: dict[str, Callable[[np.ndarray, int], Image.Image]] = {
    "MNIST digit as is (28x28)": as_is,
    "scan: enlarged, off-centre on a page, RGB, JPEG": scan,
    "inverted (dark ink on white, 28x28)": lambda pixels, i: ImageOps.invert(Image.fromarray(pixels)),
    "tight crop: no margin around the ink": tight_crop,
    "thick strokes (dilated)": thick,
    "linear shadow: paper from 90% to 40%": shadow,
    "linear shadow with sensor noise (8 grey levels)": noisy_shadow,
    "coloured paper, blue-black ink": coloured_paper,
    "light ink on dark paper": light_on_dark,
    "stray marks away from the digit": stray_marks,
    "a phone's shadow: soft edge, 90% to 45%": shadow_edge,
    "all at once: marker, coloured paper, shadow, tight crop": phone_photo,
}


def rendered(render: Callable[[np.ndarray, int], Image.Image], digits: np.ndarray) -> list[Image.Image]:
    return [render(pixels, i) for i, pixels in enumerate(digits)]


def agreement(
    model: torch.nn.Module,
    to_mnist: Callable[[Image.Image], torch.Tensor],
    images: list[Image.Image],
    digits: np.ndarray,
) -> tuple[float, int]:
    """The share of `images` (renderings of `digits`, in order) that get the clean digit's prediction, and
    how many of them were refused."""
    inputs, readable = [], []
    for image in images:
        try:
            inputs.append(to_mnist(image))
            readable.append(True)
        except UserError:  # "no digit found": a miss
            inputs.append(torch.zeros(1, 28, 28))
            readable.append(False)
    with torch.no_grad():
        clean = model(torch.from_numpy(digits).float() / 255).argmax(1)
        seen = model(torch.stack(inputs)).argmax(1)
    read = torch.tensor(readable)
    return float(((seen == clean) & read).float().mean()), int((~read).sum())


def short_checkpoint(folder: Path) -> Path:
    """Train the tests' short checkpoint with `train.py` into `folder`."""
    subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *SHORT_RUN, "test=false", f"hydra.run.dir={folder}"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        check=True,
        capture_output=True,
    )
    return folder / "checkpoints" / "best.ckpt"


def preprocessing_at(ref: str, folder: Path) -> ModuleType:
    """`mnist_logreg/preprocess.py` as it was at git commit `ref`, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{ref}:src/mnist_logreg/preprocess.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = folder / f"preprocess_{ref}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"preprocess_{ref}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="test digits per condition")
    parser.add_argument("--start", type=int, default=0, help="index of the first test digit")
    parser.add_argument("--ckpt", type=Path, help="a checkpoint (default: train the tests' short one)")
    parser.add_argument(
        "--before", metavar="REF", nargs="+", default=[], help="score preprocess.py as at each commit too"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # as predict.py: each image's operations are too small to share out
    digits = MNIST(str(ROOT / "data"), train=False).data[args.start : args.start + args.count].numpy()
    with tempfile.TemporaryDirectory() as folder:
        model = load_model(args.ckpt or short_checkpoint(Path(folder) / "run"))
        versions = {f"before ({ref})": preprocessing_at(ref, Path(folder)).to_mnist for ref in args.before}
        versions["now"] = to_mnist
        print(
            f"MNIST test digits {args.start} to {args.start + len(digits) - 1} in each condition: the share"
            " that gets the clean digit's prediction (refused as blank)\n"
        )
        print("| condition | " + " | ".join(versions) + " |")
        print("|---|" + "---:|" * len(versions))
        seconds = dict.fromkeys(versions, 0.0)
        for name, render in CONDITIONS.items():
            images, cells = rendered(render, digits), []
            for version, preprocess in versions.items():
                started = time.perf_counter()
                score, refused = agreement(model, preprocess, images, digits)
                seconds[version] += time.perf_counter() - started
                cells.append(f"{score:.1%}" + (f" ({refused})" if refused else ""))
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        count = len(digits) * len(CONDITIONS)
        print(
            "\nPreprocessing time per image: "
            + ", ".join(f"{v} {1000 * t / count:.1f} ms" for v, t in seconds.items())
        )


if __name__ == "__main__":
    main()
