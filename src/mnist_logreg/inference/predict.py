"""Label a person's own digit images with a trained checkpoint: predictions.csv, the 28x28 image the model
saw for each one (inputs/), and a printed table."""

from __future__ import annotations

import csv
import glob
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.errors import UserError
from mnist_logreg.files import replaced_atomically, write_text
from mnist_logreg.inference.preprocess import ImageError, load_image, to_mnist

log = logging.getLogger(__name__)

COLUMNS = ("path", "prediction", "probability", "error", "input")
INPUTS = "inputs"  # the folder, beside predictions.csv, of the 28x28 images the model saw


@dataclass
class Prediction:
    path: str
    prediction: int | None = None
    probability: float | None = None
    error: str = ""
    input: str = ""  # the 28x28 image the model saw, relative to predictions.csv
    pixels: torch.Tensor | None = None  # that image, 1 x 28 x 28 in [0, 1]


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


def predict_files(model: torch.nn.Module, files: list[Path]) -> list[Prediction]:
    """Every file gets a row: its prediction, probability and model input, or why it could not be read."""
    rows = []
    for path in files:
        try:
            rows.append(Prediction(str(path), pixels=to_mnist(load_image(path))))
        except ImageError as error:
            rows.append(Prediction(str(path), error=str(error)))
    readable = [row for row in rows if row.pixels is not None]
    if readable:
        with torch.no_grad():
            probs = model(torch.stack([row.pixels for row in readable])).softmax(1)
        confidence, labels = probs.max(1)
        for row, label, p in zip(readable, labels.tolist(), confidence.tolist(), strict=True):
            row.prediction, row.probability = label, p
    return rows


def write_inputs(folder: Path, rows: list[Prediction]) -> None:
    """Each readable image's model input as a 28x28 grayscale PNG, bright ink on black as in MNIST, named
    by its row (so that files of the same name from different folders do not collide) and its file name."""
    digits = len(str(len(rows)))
    for number, row in enumerate(rows, start=1):
        if row.pixels is None:
            continue
        row.input = f"{INPUTS}/{number:0{digits}d}_{Path(row.path).stem}.png"
        pixels = (row.pixels[0].numpy() * 255).round().astype(np.uint8)
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
        writer.writerow([row.path, prediction, probability, row.error, row.input])
    write_text(path, text.getvalue())


def format_table(rows: list[Prediction]) -> str:
    width = max(len("path"), *(len(row.path) for row in rows))
    lines = [f"  {'path':<{width}}  prediction  probability"]
    for row in rows:
        if row.error:
            lines.append(f"  {row.path:<{width}}  error: {row.error}")
        else:
            lines.append(f"  {row.path:<{width}}  {row.prediction:>10}  {row.probability:>11.4f}")
    return "\n".join(lines)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Preprocess each image as MNIST was made, classify them in one batch, write and print the results and
    the images the model saw."""
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
