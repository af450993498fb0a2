"""What the rest of the project reads from a data module, through Lightning's public API only, and what stands
in for each optional piece a data module lacks (docs/your_data.md).

Required: `train_dataloader`, `val_dataloader` and `test_dataloader` yielding `(images, labels)`, images
float in [0, 1] shaped `N x C x H x W` (`N x H x W` for one channel), labels int64 class indices. Optional,
read after `setup()`: `class_names` (index -> name) and `input_shape` (`C x H x W`; required only of a data
module that hands out images flattened, as MNISTDataModule does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.utilities.model_helpers import is_overridden

from mnist_logreg.errors import UserError

log = logging.getLogger(__name__)


class DataContractError(UserError):
    """A data module that does not give what docs/your_data.md asks of one."""


@dataclass(frozen=True)
class DataDescription:
    """What a model is built for: the images' `C x H x W`, the number of classes and their names (None: the
    data module has none, and the model names them by index)."""

    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: list[str] | None


def describe_data(datamodule: L.LightningDataModule, num_classes: int | None = None) -> DataDescription:
    """Prepare and set up `datamodule` for fitting, and read what the model is built for.

    The input shape is the data module's `input_shape`, else that of its first training batch. The number of
    classes is that of its `class_names`, else `num_classes` (`model.num_classes`), else 1 + the largest label
    of one pass over the training labels: a class that never occurs in training above the largest one cannot
    be known from the data, so that case is said in a log line.
    """
    datamodule.prepare_data()
    datamodule.setup("fit")
    shape = getattr(datamodule, "input_shape", None)
    input_shape = as_chw(shape) if shape is not None else batch_shape(datamodule.train_dataloader())
    names = getattr(datamodule, "class_names", None)
    if names is not None:
        names = [str(name) for name in names]
        if num_classes is not None and num_classes != len(names):
            raise DataContractError(
                f"model.num_classes={num_classes}, and the data module names {len(names)} classes: "
                "leave model.num_classes=null to take the data's."
            )
        return DataDescription(input_shape, len(names), names)
    if num_classes is None:
        num_classes = 1 + max(int(labels.max()) for _, labels in datamodule.train_dataloader())
        log.info(
            "The data module has no class_names: %d classes (1 + the largest training label), named by "
            "index; set model.num_classes if there are more",
            num_classes,
        )
    return DataDescription(input_shape, num_classes, None)


def as_chw(shape: Sequence[int]) -> tuple[int, int, int]:
    """A data module's `input_shape` as `(C, H, W)`; `(H, W)` is one channel."""
    shape = tuple(int(n) for n in shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DataContractError(f"the data module's input_shape={shape} is not (C, H, W) (docs/your_data.md)")
    return shape


def batch_shape(loader: Iterable) -> tuple[int, int, int]:
    """The `C x H x W` of the first batch's images (`N x H x W` is one channel)."""
    images, _ = next(iter(loader))
    if images.dim() == 3:
        return (1, *images.shape[1:])
    if images.dim() == 4:
        return tuple(images.shape[1:])
    raise DataContractError(
        f"the data module's images come as {' x '.join(map(str, images.shape))} tensors: give them as "
        "N x C x H x W, or give the data module an input_shape (C, H, W) (docs/your_data.md)"
    )


def all_batches(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor]:
    """Every `(images, labels)` batch of `loader`, on the CPU, concatenated."""
    batches = [(images.cpu(), labels.cpu()) for images, labels in loader]
    if not batches:
        raise DataContractError("the data module's test_dataloader is empty: give it the test images")
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def require_test_loader(datamodule: L.LightningDataModule, fix: str = "") -> None:
    """Refuse, in one line, a data module without its own `test_dataloader` (Lightning's default raises)."""
    if not is_overridden("test_dataloader", datamodule, L.LightningDataModule):
        raise DataContractError(
            f"{type(datamodule).__name__} has no test_dataloader: give it one (docs/your_data.md){fix}"
        )


def test_data(datamodule: L.LightningDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split's images and labels, read through the data module's `test_dataloader`."""
    require_test_loader(datamodule)
    datamodule.prepare_data()
    datamodule.setup("test")
    return all_batches(datamodule.test_dataloader())


def check_test_data(
    datamodule: L.LightningDataModule, input_shape: Sequence[int], class_names: Sequence[str], what: str
) -> None:
    """Refuse, in one line, test data of another shape than the model (`what`) reads; say in one log line
    when the data names its classes otherwise than the model (the model's names are used)."""
    require_test_loader(datamodule)
    datamodule.prepare_data()
    datamodule.setup("test")
    shape = getattr(datamodule, "input_shape", None)
    shape = as_chw(shape) if shape is not None else batch_shape(datamodule.test_dataloader())
    if shape != tuple(input_shape):
        raise DataContractError(
            f"{what} reads {' x '.join(map(str, input_shape))} images and the data's are "
            f"{' x '.join(map(str, shape))}: give the data it was trained on (data=...)"
        )
    names = getattr(datamodule, "class_names", None)
    if names is not None and [str(n) for n in names] != list(class_names):
        log.warning("The data names its classes otherwise than %s; the checkpoint's names are used", what)
