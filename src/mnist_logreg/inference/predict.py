"""Label a person's own images with a trained checkpoint: predictions.csv, the image the model saw for each
one (inputs/), and a printed table.

A digit model (1 x 28 x 28 images) gets each photo through MNIST's own recipe (preprocess.py); a model of
other images gets each one converted to its channels and resized to its input shape, nothing more."""

from __future__ import annotations

import csv
import functools
import glob
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.model import MNIST_SHAPE, LogisticRegression
from mnist_logreg.errors import UserError
from mnist_logreg.files import replaced_atomically, write_text
from mnist_logreg.inference.preprocess import ImageError, load_image, to_mnist

log = logging.getLogger(__name__)

COLUMNS = ("path", "prediction", "class_name", "probability", "error", "input")
INPUTS = "inputs"  # the folder, beside predictions.csv, of the images the model saw
MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # Pillow's image mode for a model's number of channels


@dataclass
class Prediction:
    path: str
    prediction: int | None = None  # the class's index
    class_name: str = ""
    probability: float | None = None
    error: str = ""
    input: str = ""  # the image the model saw, relative to predictions.csv
    pixels: torch.Tensor | None = None  # that image, C x H x W in [0, 1]


def find_images(spec: str) -> list[Path]:
    """The files that `spec` names: one file, the files in a folder (not hidden, not recursive), or a glob."""
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
    elif path.exists():
        files = [path]
    else:
        files = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    if not files:
        raise UserError(
            f"images={spec}: no such file, folder, or matching files (quote a glob: 'images=d/*.png')"
        )
    return sorted(files)


def resized(image: Image.Image, shape: tuple[int, ...]) -> torch.Tensor:
    """The image in the model's channels (grayscale, RGB or RGBA), resized to its `H x W`: `C x H x W` in
    [0, 1], as a data module hands images to the model."""
    channels, height, width = shape
    pixels = np.asarray(image.convert(MODES[channels]).resize((width, height), Image.Resampling.BILINEAR))
    return torch.from_numpy(pixels.copy()).reshape(height, width, channels).permute(2, 0, 1).float() / 255


def model_input(model: LogisticRegression) -> Callable[[Image.Image], torch.Tensor]:
    """How an image becomes the model's input: MNIST's digit recipe for a 1 x 28 x 28 model, a resize to the
    model's input shape for any other (said in one log line)."""
    shape = model.input_shape
    if shape == MNIST_SHAPE:
        return to_mnist
    if shape[0] not in MODES:
        raise UserError(
            f"the checkpoint reads images of {shape[0]} channels: predict.py reads 1 (grayscale), 3 (RGB) "
            "or 4 (RGBA); label them in your own code with model(images)"
        )
    log.info(
        "The checkpoint reads %s images: MNIST's digit preprocessing is skipped, each image is resized",
        " x ".join(map(str, shape)),
    )
    return functools.partial(resized, shape=shape)


def predict_files(model: LogisticRegression, files: list[Path]) -> list[Prediction]:
    """Every file gets a row: its prediction, probability and model input, or why it could not be read."""
    prepare = model_input(model)
    rows = []
    for path in files:
        try:
            rows.append(Prediction(str(path), pixels=prepare(load_image(path))))
        except ImageError as error:
            rows.append(Prediction(str(path), error=str(error)))
    readable = [(row, row.pixels) for row in rows if row.pixels is not None]
    if readable:
        with torch.no_grad():
            probs = model(torch.stack([pixels for _, pixels in readable])).softmax(1)
        confidence, labels = probs.max(1)
        names = model.class_names
        for (row, _), label, p in zip(readable, labels.tolist(), confidence.tolist(), strict=True):
            row.prediction, row.class_name, row.probability = label, names[label], p
    return rows


def write_inputs(folder: Path, rows: list[Prediction]) -> None:
    """Each readable image's model input as a PNG (a digit model's: 28x28 grayscale, bright ink on black as
    in MNIST), named by its row (so that files of the same name from different folders do not collide) and
    its file name."""
    digits = len(str(len(rows)))
    for number, row in enumerate(rows, start=1):
        if row.pixels is None:
            continue
        row.input = f"{INPUTS}/{number:0{digits}d}_{Path(row.path).stem}.png"
        pixels = (row.pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        pixels = pixels[..., 0] if pixels.shape[2] == 1 else pixels
        with replaced_atomically(folder / row.input) as tmp:
            Image.fromarray(pixels).save(tmp, format="PNG")


def write_csv(path: Path, rows: list[Prediction]) -> None:
    """Written whole or not at all, like metrics.json."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for row in rows:
        probability = "" if row.probability is None else f"{row.probability:.4f}"
        prediction = "" if row.prediction is None else row.prediction
        writer.writerow([row.path, prediction, row.class_name, probability, row.error, row.input])
    write_text(path, text.getvalue())


def format_table(rows: list[Prediction]) -> str:
    width = max(len("path"), *(len(row.path) for row in rows))
    name_width = max(len("prediction"), *(len(row.class_name) for row in rows))
    lines = [f"  {'path':<{width}}  {'prediction':>{name_width}}  probability"]
    for row in rows:
        if row.error:
            lines.append(f"  {row.path:<{width}}  error: {row.error}")
        else:
            lines.append(f"  {row.path:<{width}}  {row.class_name:>{name_width}}  {row.probability:>11.4f}")
    return "\n".join(lines)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Preprocess each image for the model (as MNIST was made, for a digit model), classify them in one
    batch, write and print the results and the images the model saw."""
    if cfg.get("images") in (None, "", "???"):
        raise UserError("images is required: add images=PATH (a file, a folder, or a quoted glob)")
    files = find_images(str(cfg.images))
    if cfg.get("cpu_threads"):
        torch.set_num_threads(cfg.cpu_threads)
    rows = predict_files(load_model(cfg.get("ckpt_path")), files)
    folder = Path(cfg.paths.output_dir)
    write_inputs(folder, rows)
    output = folder / "predictions.csv"
    write_csv(output, rows)  # last: its presence means the run finished
    log.info("Predictions (%s; what the model saw: %s):\n%s", output, folder / INPUTS, format_table(rows))
    failed = sum(1 for row in rows if row.error)
    if failed == len(rows):
        raise UserError(f"no file could be labelled ({len(rows)} tried): see the errors in {output}")
    if failed:
        log.warning("%d of %d files could not be labelled: see the errors above", failed, len(rows))
    return rows
