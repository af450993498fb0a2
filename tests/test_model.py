"""The LightningModule's arithmetic and its checkpoints, on tiny synthetic data."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import torch

from mnist_logreg.data import MNISTDataModule
from mnist_logreg.model import LogisticRegression


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
