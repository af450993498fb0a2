"""Deskewing: what it does to a digit, the model option, one deskewed checkpoint through every entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import ROOT, compose_config
from mnist_logreg.callbacks.figures import deskew_figure, first_of_each_class
from mnist_logreg.core.checkpoints import CheckpointError
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.core.deskew import CENTRE, Deskew
from mnist_logreg.core.model import LogisticRegression
from mnist_logreg.plotting import render
from mnist_logreg.runs.resume import check_resume

QUIET = "callbacks.progress_bar.refresh_rate=0"


def moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre of mass (x, y) and the normalised cross moment mu11 / mu02 of each 28x28 image."""
    images = images.reshape(-1, 28, 28).double()
    y, x = torch.meshgrid(torch.arange(28.0).double(), torch.arange(28.0).double(), indexing="ij")
    mass = images.sum((1, 2))
    cx, cy = (images * x).sum((1, 2)) / mass, (images * y).sum((1, 2)) / mass
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    mu11, mu02 = (images * dx * dy).sum((1, 2)), (images * dy * dy).sum((1, 2))
    return cx, cy, mu11 / mu02


def stroke(slant: float) -> torch.Tensor:
    """A one-stroke 1, 2 pixels wide and 17 high, centred on (14, 14), leaning `slant` pixels per row."""
    image = torch.zeros(28, 28)
    for row in range(6, 23):
        left = CENTRE - 1 + slant * (row - CENTRE)  # the stroke covers [left, left + 2)
        for col in range(28):  # pixel `col` spans [col - 0.5, col + 0.5); its ink is the part covered
            image[row, col] = max(0.0, min(col + 0.5, left + 2) - max(col - 0.5, left))
    return image


def test_an_upright_centred_digit_is_left_as_it_is() -> None:
    upright = stroke(0.0)
    assert torch.allclose(Deskew()(upright[None]), upright[None], atol=1e-5)


def test_a_sheared_digit_comes_back_upright() -> None:
    slanted = stroke(0.4)
    assert moments(slanted)[2] > 0.35
    straightened = Deskew()(slanted[None])
    cx, cy, cross = moments(straightened)
    assert abs(float(cross)) < 0.01 and abs(float(cx) - CENTRE) < 0.05 and abs(float(cy) - CENTRE) < 0.05
    upright_ink = float(stroke(0.0).sum())
    assert float((slanted - stroke(0.0)).abs().sum()) > 1.0 * upright_ink
    assert float((straightened[0] - stroke(0.0)).abs().sum()) < 0.15 * upright_ink  # bilinear blur only
    assert abs(float(straightened.sum() - slanted.sum())) < 1e-3  # no ink lost


@pytest.mark.slow
def test_mnist_digits_come_back_upright_and_centred() -> None:
    datamodule = MNISTDataModule(data_dir=str(ROOT / "data"))
    datamodule.prepare_data()
    datamodule.setup("test")
    images = datamodule.splits["test"][0][:2000]
    _, _, before = moments(images)
    cx, cy, after = moments(Deskew()(images))
    assert float(before.abs().median()) > 0.15  # MNIST's digits do lean
    assert float(after.abs().median()) < 0.005 and float(after.abs().max()) < 0.15
    assert float((cx - CENTRE).abs().max()) < 0.5 and float((cy - CENTRE).abs().max()) < 0.5
    once = Deskew()(images)
    change = (Deskew()(once) - once).abs().sum(1) / once.sum(1)  # an upright digit deskewed again
    assert float(change.median()) < 0.05


def test_shapes_blank_images_and_chunks() -> None:
    images = torch.rand(5, 784) * (torch.rand(5, 784) > 0.8)
    images[2] = 0.0  # blank: no centre of mass, no shear
    out = Deskew()(images)
    assert out.shape == (5, 784) and torch.isfinite(out).all() and float(out[2].abs().max()) == 0.0
    assert torch.equal(Deskew()(images.reshape(5, 1, 28, 28)), out.reshape(5, 1, 28, 28))


def test_the_model_deskews_what_it_reads_in_every_input_shape() -> None:
    images = torch.stack([stroke(0.3), stroke(-0.2), stroke(0.0)])
    plain, deskewing = LogisticRegression(), LogisticRegression(deskew=True)
    deskewing.net.load_state_dict(plain.net.state_dict())
    assert isinstance(deskewing.transform, Deskew) and isinstance(plain.transform, torch.nn.Identity)
    with torch.no_grad():
        expected = plain.net(Deskew()(images.reshape(3, 784)))
        for shape in ((3, 784), (3, 28, 28), (3, 1, 28, 28)):
            torch.testing.assert_close(deskewing(images.reshape(shape)), expected)
        assert not torch.allclose(plain(images), expected, atol=1e-3)


def test_the_figure_shows_each_digit_above_its_deskewed_self() -> None:
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 0, 7, 8])
    picked = first_of_each_class(labels, 10)
    assert labels[picked].tolist() == list(range(10)) and picked[1] == 1 and picked[5] == 4
    before = torch.stack([stroke(0.1 * d - 0.4) for d in range(10)]).reshape(10, 784)
    after = Deskew()(before)
    fig = deskew_figure(before, after, torch.arange(10))
    assert render(fig).shape == (320, 1000, 3)
    (ax,) = fig.axes
    mosaic = np.asarray(ax.images[0].get_array())
    for n, text in enumerate(ax.texts):
        x, y = text.get_position()
        tile = mosaic[int(y + 0.5) : int(y + 0.5) + 28, int(x - 13.5) : int(x - 13.5) + 28]
        expected = before[n] if n < 10 else after[n - 10]
        np.testing.assert_array_equal(tile, expected.reshape(28, 28).numpy())
    assert [t.get_text() for t in ax.texts[:2]] == ["0, shear -0.40", "1, shear -0.30"]
    assert {t.get_text() for t in ax.texts[10:]} == {"deskewed"}


# One deskewed checkpoint, trained briefly on the real MNIST, through train, eval, predict and export.


@pytest.fixture(scope="module")
def deskewed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`experiment=deskewed` cut to one epoch of batches of 200 (275 steps)."""
    from mnist_logreg.runs.training import train

    output_dir = tmp_path_factory.mktemp("deskewed") / "run"
    overrides = [
        "experiment=deskewed",
        "trainer.max_epochs=1",
        "data.batch_size=200",
        "trainer.accelerator=cpu",
        QUIET,
    ]
    train(compose_config(overrides, output_dir))
    return output_dir


@pytest.mark.slow
def test_a_deskewed_checkpoint_scores_the_same_in_train_eval_predict_and_onnx(
    deskewed_run: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime

    from mnist_logreg.inference.export import export
    from mnist_logreg.runs.evaluation import evaluate

    best = deskewed_run / "checkpoints" / "best.ckpt"
    assert torch.load(best, weights_only=True)["hyper_parameters"]["deskew"] is True
    trained = json.loads((deskewed_run / "metrics.json").read_text())
    assert 0.9 < trained["test/acc"] < 1.0
    correct = round(trained["test/acc"] * 10_000)

    evaluated = evaluate(compose_config([f"ckpt_path={best}", QUIET], tmp_path / "eval", "eval"))
    assert evaluated["test/acc"] == trained["test/acc"]
    assert (tmp_path / "eval" / "figures" / "deskewing.png").is_file()

    # The checkpoint alone is the classifier: given the test images as read, it deskews them itself, as
    # the ONNX model does (the README's "use the model in your own code").
    as_read = MNISTDataModule(data_dir=str(ROOT / "data"))
    as_read.prepare_data()
    as_read.setup("test")
    images, labels = as_read.splits["test"]
    model = LogisticRegression.load_from_checkpoint(best, map_location="cpu").eval()
    with torch.no_grad():
        for shape in ((-1, 784), (-1, 28, 28), (-1, 1, 28, 28)):
            predicted = model(images.reshape(shape)).argmax(1)
            assert int((predicted == labels).sum()) == correct

    path = export(compose_config([f"ckpt_path={best}"], tmp_path / "export", "export"))
    assert "GridSample" in {node.op_type for node in onnx.load(path).graph.node}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"pixels": images.reshape(-1, 1, 28, 28).numpy()})
    assert int((logits.argmax(1) == labels.numpy()).sum()) == correct

    with torch.no_grad():  # the same checkpoint without its transform reads raw images worse
        raw_model_correct = int((model.net(images).argmax(1) == labels).sum())
    assert raw_model_correct < correct - 100
    assert (deskewed_run / "figures" / "deskewing.png").is_file()


@pytest.mark.slow
def test_resuming_a_deskewed_run_without_deskew_is_refused(deskewed_run: Path) -> None:
    from mnist_logreg.core.model import LogisticRegression

    model = LogisticRegression()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0064, weight_decay=5.6e-6)
    datamodule = MNISTDataModule(batch_size=200)
    with pytest.raises(CheckpointError, match=r"was trained with model\.deskew=true, this run has false"):
        check_resume(deskewed_run / "checkpoints" / "last.ckpt", model, datamodule, optimizer)


@pytest.mark.slow
def test_a_checkpoint_from_before_the_model_held_its_transform_predicts_the_same(
    deskewed_run: Path, tmp_path: Path
) -> None:
    best = deskewed_run / "checkpoints" / "best.ckpt"
    old = torch.load(best, weights_only=True)  # as train.py wrote it when the data module deskewed
    old["hyper_parameters"] = {"input_size": 784, "num_classes": 10, "scheduler_interval": "epoch"}
    old["datamodule_hyper_parameters"]["deskew"] = True
    old["state_dict"] = {k.replace("net.", "linear."): v for k, v in old["state_dict"].items()}
    torch.save(old, tmp_path / "old.ckpt")
    images = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        expected = LogisticRegression.load_from_checkpoint(best, map_location="cpu")(images)
        upgraded = LogisticRegression.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu")
        torch.testing.assert_close(upgraded(images), expected, rtol=0, atol=0)
    assert upgraded.hparams.deskew is True and isinstance(upgraded.transform, Deskew)


@pytest.mark.slow
def test_the_readmes_three_lines_classify_raw_images_with_a_deskewed_checkpoint(deskewed_run: Path) -> None:
    """README.md, "Use a checkpoint": the lines as printed, with a real path and MNIST's test images."""
    readme = (ROOT / "README.md").read_text()
    (snippet,) = re.findall(r"In your own code:\n\n```python\n(.*?)```", readme, flags=re.S)
    assert len([line for line in snippet.splitlines() if line.strip()]) == 3
    best = deskewed_run / "checkpoints" / "best.ckpt"
    datamodule = MNISTDataModule(data_dir=str(ROOT / "data"))
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    scope = {"images": images.reshape(-1, 28, 28)}  # as read, N x 28 x 28
    with torch.no_grad():
        exec(snippet.replace("logs/runs/<run>/checkpoints/best.ckpt", str(best)), scope)
    trained = json.loads((deskewed_run / "metrics.json").read_text())
    assert int((scope["digits"] == labels).sum()) == round(trained["test/acc"] * 10_000)
