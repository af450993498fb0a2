"""predict.py shows what the model saw: each image's input (28x28 for digits) beside predictions.csv."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torchvision.datasets import MNIST

from helpers import ROOT
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.model import LogisticRegression
from mnist_logreg.inference.predict import predict, predict_files, write_inputs
from mnist_logreg.inference.preprocess import load_image, to_mnist


@pytest.mark.slow
def test_each_labelled_image_has_its_model_input_beside_the_csv(
    trained_run: Path, tmp_path: Path, compose_train
) -> None:
    best = trained_run / "checkpoints" / "best.ckpt"
    digits = MNIST(str(ROOT / "data"), train=False).data[:3].numpy()
    for folder, pixels in zip(("a", "b", "c"), digits, strict=True):  # the same file name in each folder
        (tmp_path / folder).mkdir()
        photo = ImageOps.invert(Image.fromarray(pixels).resize((120, 120), Image.Resampling.BICUBIC))
        ImageOps.expand(photo, 40, fill=255).convert("RGB").save(tmp_path / folder / "digit.jpg")
    (tmp_path / "c" / "notes.png").write_text("not an image")

    cfg = compose_train(f"ckpt_path={best}", f"images={tmp_path}/*/*", config_name="predict")
    predict(cfg)
    output = Path(cfg.paths.output_dir)
    with open(output / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))

    assert [row["input"] for row in rows] == [
        "inputs/1_digit.png",
        "inputs/2_digit.png",
        "inputs/3_digit.png",
        "",  # notes.png could not be read: no input
    ]
    assert sorted(p.name for p in (output / "inputs").iterdir()) == [
        "1_digit.png",
        "2_digit.png",
        "3_digit.png",
    ]
    model = load_model(best)
    for row in rows[:3]:
        saved = Image.open(output / row["input"])
        assert saved.mode == "L" and saved.size == (28, 28)
        pixels = torch.from_numpy(np.asarray(saved, dtype=np.float32) / 255).unsqueeze(0)
        # The PNG is the model's input in 8 bits: the same image, and read back, the same prediction.
        assert (pixels - to_mnist(load_image(row["path"]))).abs().max() <= 0.5 / 255 + 1e-6
        with torch.no_grad():
            assert int(model(pixels.unsqueeze(0)).argmax()) == int(row["prediction"])


def test_a_model_of_colour_images_gets_each_image_resized_not_digit_preprocessed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = LogisticRegression(input_shape=[3, 8, 6], class_names=["red", "green", "blue"]).eval()
    with torch.no_grad():  # class c's logit: the mean of channel c
        model.net.weight.copy_(torch.eye(3).repeat_interleave(48, dim=1) / 48)
        model.net.bias.zero_()
    colours = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
    files = []
    for name, colour in colours.items():
        Image.fromarray(np.full((30, 40, 3), colour, dtype=np.uint8)).save(tmp_path / f"{name}.png")
        files.append(tmp_path / f"{name}.png")
    with caplog.at_level(logging.INFO, logger="mnist_logreg.inference.predict"):
        rows = predict_files(model, files)
    assert "reads 3 x 8 x 6 images: MNIST's digit preprocessing is skipped" in caplog.text
    assert [(Path(row.path).stem, row.class_name, row.prediction) for row in rows] == [
        ("red", "red", 0),
        ("green", "green", 1),
        ("blue", "blue", 2),
    ]
    assert rows[0].pixels.shape == (3, 8, 6)
    torch.testing.assert_close(rows[0].pixels[:, 0, 0], torch.tensor(colours["red"]) / 255)
    write_inputs(tmp_path, rows)
    with Image.open(tmp_path / rows[0].input) as seen:  # the model's input, in colour
        assert (seen.mode, seen.size) == ("RGB", (6, 8))
