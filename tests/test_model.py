"""The LightningModule's arithmetic and its checkpoints, on tiny synthetic data."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.core.model import LogisticRegression


def test_logits_for_flat_and_image_shaped_input() -> None:
    model = LogisticRegression()
    images = torch.rand(4, 1, 28, 28)
    logits = model(images)
    assert logits.shape == (4, 10)
    assert torch.equal(logits, model(images.reshape(4, 784)))
    # Raw logits: the softmax belongs to the loss, so rows are not probabilities.
    assert not torch.allclose(logits.softmax(1).sum(1), logits.sum(1))


def test_loss_is_cross_entropy_of_the_logits() -> None:
    model = LogisticRegression()
    images, labels = torch.rand(8, 784), torch.randint(0, 10, (8,))
    expected = -model(images).log_softmax(1)[torch.arange(8), labels].mean()
    assert torch.allclose(model.loss(model(images), labels), expected)


@pytest.mark.slow
def test_training_learns_a_separable_problem(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = MNISTDataModule(data_dir=str(tiny_mnist), batch_size=50, val_size=100)
    model = LogisticRegression(optimizer=functools.partial(torch.optim.SGD, lr=0.5))
    trainer = L.Trainer(
        max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    (before,) = trainer.validate(model, datamodule=dm, verbose=False)
    trainer.fit(model, datamodule=dm)
    (after,) = trainer.test(model, datamodule=dm, verbose=False)
    assert after["test/loss"] < before["val/loss"] / 4
    assert after["test/acc"] >= 0.95


@pytest.mark.slow
def test_checkpoint_loads_back_with_weights_only(tiny_mnist: Path, tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tiny_mnist), batch_size=50, val_size=100)
    model = LogisticRegression(optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # the default of torch >= 2.6, made explicit
    assert checkpoint["hyper_parameters"] == {
        "net": {"_target_": "torch.nn.Linear", "in_features": 784, "out_features": 10},
        "deskew": False,
        "scheduler_interval": "epoch",
        "input_shape": [1, 28, 28],
        "num_classes": 10,
        "class_names": [str(digit) for digit in range(10)],
    }
    loaded = LogisticRegression.load_from_checkpoint(path)
    images = torch.rand(5, 784)
    assert torch.equal(loaded(images), model(images))
    assert MNISTDataModule.load_from_checkpoint(path).hparams.val_size == 100


def test_the_model_summary_shows_shapes_and_flops() -> None:
    """Lightning's summary runs `example_input_array` through the model: a multiply and an add per weight."""
    from lightning.pytorch.utilities.model_summary import ModelSummary

    summary = ModelSummary(LogisticRegression(), max_depth=1)
    net = summary.layer_names.index("net")
    assert summary.in_sizes[net] == [1, 784] and summary.out_sizes[net] == [1, 10]
    assert summary.total_flops == 2 * 784 * 10


@pytest.mark.parametrize("shape", [(4, 784), (4, 28, 28), (4, 1, 28, 28)])
def test_a_users_code_passes_uint8_or_floats_in_unit_range(shape: tuple[int, ...]) -> None:
    model = LogisticRegression().eval()
    pixels = torch.randint(0, 256, shape, dtype=torch.uint8)  # as PIL and numpy give images
    floats = pixels.float() / 255
    assert torch.equal(model(pixels), model(floats))
    assert model(floats).shape == (4, 10)
    with pytest.raises(ValueError, match=r"from 0 to 255: the model reads pixels in \[0, 1\]") as refused:
        model(pixels.float())  # 0-255 floats would answer wrong without a word
    assert "\n" not in str(refused.value)
    with pytest.raises(ValueError, match=r"from -0\.5 to"):
        model(floats - 0.5)


def test_a_model_of_other_images_rebuilds_from_its_hyperparameters() -> None:
    model = LogisticRegression(input_shape=[3, 32, 32], class_names=["cat", "dog", "fox"]).eval()
    net = {"_target_": "torch.nn.Linear", "in_features": 3072, "out_features": 3}
    assert model.hparams.net == net
    again = LogisticRegression(**model.hparams)
    again.load_state_dict(model.state_dict())
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(again.eval()(images), model(images)) and again.class_names == ["cat", "dog", "fox"]
    with pytest.raises(ValueError, match=r"deskews 1 x 28 x 28 digits, and the images are 3 x 32 x 32"):
        LogisticRegression(input_shape=[3, 32, 32], deskew=True)
