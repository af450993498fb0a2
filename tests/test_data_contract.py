"""What the project reads from a data module (docs/your_data.md), and what stands in for a missing piece:
the input shape from the first batch, the number of classes from the labels or the config, names by index."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers import compose_config
from mnist_logreg.core.data_contract import (
    DataContractError,
    DataDescription,
    check_test_data,
    describe_data,
    require_test_loader,
)
from mnist_logreg.runs.assembly import build_model
from mnist_logreg.runs.config import check_parts


class Plain(L.LightningDataModule):
    """A data module as Lightning's docs write one; `flat` hands the images out as N x C*H*W."""

    def __init__(self, shape: tuple[int, ...] = (3, 8, 6), top_label: int = 2, flat: bool = False) -> None:
        super().__init__()
        images = torch.rand(12, *shape)
        self.images = images.flatten(1) if flat else images
        self.labels = torch.arange(12) % (top_label + 1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=5)


def test_the_shape_comes_from_the_first_batch_and_the_classes_from_the_labels(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="mnist_logreg.core.data_contract"):
        assert describe_data(Plain()) == DataDescription((3, 8, 6), 3, None)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "no class_names: 3 classes (1 + the largest training label)" in line
    assert describe_data(Plain((8, 6)), num_classes=5) == DataDescription((1, 8, 6), 5, None)


def test_the_data_modules_own_attributes_come_first() -> None:
    data = Plain(flat=True)
    data.input_shape, data.class_names = (3, 8, 6), ["a", "b", "c"]
    assert describe_data(data) == DataDescription((3, 8, 6), 3, ["a", "b", "c"])
    with pytest.raises(DataContractError, match=r"model.num_classes=4, and the data module names 3 classes"):
        describe_data(data, num_classes=4)


def test_flat_images_without_a_shape_are_refused_in_one_line() -> None:
    with pytest.raises(DataContractError, match=r"come as 5 x 144 tensors: .* an input_shape \(C, H, W\)"):
        describe_data(Plain(flat=True))


@pytest.mark.parametrize("net", ["linear", "mlp"])
def test_the_networks_are_sized_for_the_data(net: str, tmp_path: Path) -> None:
    cfg = compose_config([f"model/net={net}"], tmp_path)
    check_parts(cfg)  # the sizes are null until the data is read: the config check lets them be
    model = build_model(cfg, DataDescription((3, 8, 6), 4, ["w", "x", "y", "z"]))
    assert model(torch.rand(2, 3, 8, 6)).shape == (2, 4)
    assert model.hparams.input_shape == [3, 8, 6] and model.class_names == ["w", "x", "y", "z"]
    first = model.net if net == "linear" else model.net[0]
    assert first.in_features == 144
    mnist = DataDescription((1, 28, 28), 10, None)
    assert build_model(cfg).hparams.net == build_model(cfg, mnist).hparams.net  # MNIST's, without data


def test_eval_and_export_refuse_data_they_cannot_test_on(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DataContractError, match=r"^Plain has no test_dataloader: give it one"):
        require_test_loader(Plain())

    class Tested(Plain):
        def test_dataloader(self) -> DataLoader:
            return self.train_dataloader()

    tested = Tested()
    with pytest.raises(DataContractError, match=r"reads 1 x 28 x 28 images and the data's are 3 x 8 x 6: "):
        check_test_data(tested, (1, 28, 28), [str(c) for c in range(10)], "ckpt_path=best.ckpt")
    tested.class_names = ["a", "b", "c"]
    with caplog.at_level(logging.WARNING, logger="mnist_logreg.core.data_contract"):
        check_test_data(tested, (3, 8, 6), ["x", "y", "z"], "ckpt_path=best.ckpt")
    assert "names its classes otherwise than ckpt_path=best.ckpt" in caplog.text
