"""demo.py: the page served in-process and called through Gradio's client, as the browser calls it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image, ImageOps

from helpers import compose_config
from mnist_logreg.callbacks.figures import WEIGHTS_CMAP
from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.errors import UserError
from mnist_logreg.inference.demo import (
    ZOOM,
    DemoError,
    build_app,
    check_address,
    latest_checkpoint,
    require_gradio,
    serve,
    start,
)
from mnist_logreg.inference.predict import predict_files
from mnist_logreg.inference.preprocess import load_image, to_mnist

# Gradio's queue keeps per-function timings in a pandas DataFrame, with options pandas 3 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")


@pytest.fixture(scope="module")
def served(trained_run: Path) -> Iterator[tuple[str, Path]]:
    """The demo of the trained run's best checkpoint, served on a free loopback port: its address."""
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    with pytest.MonkeyPatch.context() as patch:
        # The client reads only the variable (its own switch cannot turn its telemetry off).
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        model = load_model(ckpt)
        app = build_app(model, ckpt)
        url = start(app, "127.0.0.1", None)
        try:
            yield url, ckpt
        finally:
            app.close(verbose=False)


@pytest.fixture(scope="module")
def client(served: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory):
    from gradio_client import Client

    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    return Client(
        served[0], verbose=False, analytics_enabled=False, download_files=tmp_path_factory.mktemp("answers")
    )


def drawn(digit: torch.Tensor, path: Path) -> Path:
    """A test digit as the canvas sends it: black ink on a white 400 x 400 page, off centre, RGBA."""
    ink = Image.fromarray((digit.reshape(28, 28) * 255).round().byte().numpy())
    page = Image.new("L", (400, 400), 255)
    page.paste(ImageOps.invert(ink.resize((280, 280), Image.Resampling.BILINEAR)), (40, 90))
    page.convert("RGBA").save(path)
    return path


def canvas(path: Path) -> dict:
    from gradio_client import handle_file

    return {"background": handle_file(path), "layers": [], "composite": handle_file(path)}


def image(update: dict) -> np.ndarray:
    """The pixels of an image that the answer sent with a new caption."""
    return np.asarray(Image.open(update["value"]).convert("RGB"))


def evidence_colours(evidence: torch.Tensor, limit: float) -> np.ndarray:
    """The weight-template figure's colour scale, pixel for pixel, as the page must show it."""
    rgb = colormaps[WEIGHTS_CMAP]((evidence.numpy() / limit + 1) / 2, bytes=True)[..., :3]
    return rgb.repeat(ZOOM, axis=0).repeat(ZOOM, axis=1)


@pytest.mark.slow
def test_the_page_answers_as_predict_does_and_its_maps_add_up_to_the_logits(
    served: tuple[str, Path], client, tmp_path: Path
) -> None:
    _, ckpt = served
    model = load_model(ckpt)
    datamodule = MNISTDataModule()
    datamodule.setup("test")
    images, _ = datamodule.splits["test"]
    path = drawn(images[0], tmp_path / "seven.png")
    [expected] = predict_files(model, [path])

    seen, label, why, why_not, table = client.predict(canvas(path), "runner-up", api_name="/answer")

    # What predict.py answers for the same image, with the probabilities that add up to one.
    confidences = {int(c["label"]): c["confidence"] for c in label["confidences"]}
    assert int(label["label"]) == expected.prediction
    assert confidences[expected.prediction] == pytest.approx(expected.probability, abs=1e-6)
    assert sorted(confidences) == list(range(10))
    assert sum(confidences.values()) == pytest.approx(1.0, abs=1e-6)

    # The 28x28 image shown is the one predict.py's preprocessing makes, dark ink on white.
    pixels = to_mnist(load_image(path))[0]
    shown = np.asarray(Image.open(seen).convert("L"))[::ZOOM, ::ZOOM]
    assert np.array_equal(shown, 255 - (pixels.numpy() * 255).round().astype(np.uint8))

    # Each class's logit is its evidence map's sum plus its bias, and both are the model's own numbers.
    weights, bias = model.net.weight.detach(), model.net.bias.detach()
    evidence = pixels * weights.reshape(10, 28, 28)
    with torch.no_grad():
        logits = model(pixels.reshape(1, 784))[0]
    rows = {int(row[0]): row[1:] for row in table["data"]}
    assert sorted(rows) == list(range(10))
    for digit, (probability, logit, ink_times_weights, class_bias) in rows.items():
        assert ink_times_weights + class_bias == pytest.approx(logit, abs=1e-5)
        assert ink_times_weights == pytest.approx(float(evidence[digit].sum()), abs=1e-4)
        assert class_bias == pytest.approx(float(bias[digit]), abs=1e-6)
        assert logit == pytest.approx(float(logits[digit]), abs=1e-4)
        assert probability == pytest.approx(confidences[digit], abs=1e-6)

    # The maps: the top class and the runner-up, red where the ink raised the logit, blue where it lowered it.
    top, runner_up = logits.argsort(descending=True)[:2].tolist()
    limit = float(weights.abs().max())
    assert why["label"].startswith(f"Why {top}: ") and why_not["label"].startswith(f"Why not {runner_up}: ")
    why_rgb = image(why)
    assert np.array_equal(why_rgb, evidence_colours(evidence[top], limit))
    reds = why_rgb[::ZOOM, ::ZOOM, 0].astype(int) - why_rgb[::ZOOM, ::ZOOM, 2]
    assert (reds[evidence[top].numpy() > 0.2 * limit] > 0).all()
    assert (reds[evidence[top].numpy() < -0.2 * limit] < 0).all()
    assert (reds > 0).sum() > 20  # the top class's map has real red in it
    assert np.array_equal(image(why_not), evidence_colours(evidence[runner_up], limit))

    # "Why not 3" (any class but these two) shows that class's map.
    other = next(d for d in range(10) if d not in (top, runner_up))
    _, _, _, why_not, _ = client.predict(canvas(path), str(other), api_name="/answer")
    assert why_not["label"].startswith(f"Why not {other}: ")
    assert np.array_equal(image(why_not), evidence_colours(evidence[other], limit))


@pytest.mark.slow
def test_a_blank_page_asks_for_a_digit(client, tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("RGB", (400, 400), "white").save(path)
    seen, label, why, why_not, table = client.predict(canvas(path), "runner-up", api_name="/answer")
    assert label["label"] == "Draw a digit"
    assert (seen, why["value"], why_not["value"], table["data"]) == (None, None, None, [])


@pytest.mark.slow
def test_a_taken_port_is_named_with_the_fix(served: tuple[str, Path]) -> None:
    url, ckpt = served
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    model = load_model(ckpt)
    with pytest.raises(DemoError, match=rf"port {port} is in use on 127\.0\.0\.1: pass server_port= a free"):
        start(build_app(model, ckpt), "127.0.0.1", port)


def test_an_address_of_another_machine_is_refused_at_once() -> None:
    check_address("127.0.0.1")
    with pytest.raises(DemoError, match=r"server_name=192\.0\.2\.1 is not an address of this machine"):
        check_address("192.0.2.1")  # TEST-NET-1, reserved for documentation: no machine has it


def test_without_gradio_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    with pytest.raises(UserError, match=r'needs gradio, which is not installed: pip install -e "\.\[demo\]"'):
        require_gradio()
    with pytest.raises(UserError, match=r"pip install -e"):  # before it reads any checkpoint
        serve(compose_config(["ckpt_path=best.ckpt"], tmp_path, "demo"))


def test_the_latest_runs_best_checkpoint_is_the_default(tmp_path: Path) -> None:
    runs = tmp_path / "logs" / "runs"
    for age, run, name in ((200, "a", "best.ckpt"), (100, "b", "best.ckpt"), (0, "c", "last.ckpt")):
        path = runs / run / "checkpoints" / name
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1e9 - age, 1e9 - age))
    assert latest_checkpoint(tmp_path) == runs / "b" / "checkpoints" / "best.ckpt"


@pytest.mark.slow
def test_with_no_run_it_says_to_train_first(tmp_path: Path) -> None:
    (tmp_path / "logs" / "runs" / "empty").mkdir(parents=True)
    with pytest.raises(DemoError, match=r"run `python train\.py` first, or pass ckpt_path="):
        serve(compose_config([f"paths.root_dir={tmp_path}"], tmp_path / "out", "demo"))


@pytest.mark.slow
def test_a_deskewing_checkpoint_is_read_after_its_transform(trained_run: Path) -> None:
    from mnist_logreg.core.deskew import Deskew
    from mnist_logreg.inference.demo import read

    model = load_model(trained_run / "checkpoints" / "best.ckpt")
    model.transform = Deskew()  # as a checkpoint trained with model.deskew=true has it
    sheared = Image.new("L", (120, 120), 255)
    for row in range(20, 100):  # a slanted stroke: a 1 written at an angle
        sheared.paste(0, (40 + row // 3, row, 52 + row // 3, row + 1))
    reading = read(model, sheared)
    expected = Deskew()(to_mnist(sheared).unsqueeze(0))[0, 0]
    assert torch.equal(reading.pixels, expected) and not torch.equal(reading.pixels, to_mnist(sheared)[0])
    assert torch.allclose(reading.evidence.sum((1, 2)) + reading.bias, reading.logits, atol=1e-5)
