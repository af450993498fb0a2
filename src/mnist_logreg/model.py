"""Multinomial logistic regression as a LightningModule: one linear layer, raw logits, cross-entropy."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class LogisticRegression(L.LightningModule):
    """`nn.Linear(784, 10)` trained with `CrossEntropyLoss`, which applies the softmax itself.

    `optimizer` is a factory (Hydra's `_partial_: true`) that this module calls with its own parameters.
    It is left out of the saved hyperparameters so that checkpoints hold plain values only and load under
    `torch.load(weights_only=True)`; a checkpoint loaded for evaluation needs no optimizer.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        input_size: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.optimizer_factory = optimizer
        self.linear = nn.Linear(input_size, num_classes)
        self.loss = nn.CrossEntropyLoss()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.val_acc = self.train_acc.clone()
        self.test_acc = self.train_acc.clone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images shaped `N x 784` or `N x 1 x 28 x 28`, pixels in [0, 1]."""
        return self.linear(images.flatten(1))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy(logits, labels)
        on_step = stage == "train"
        # Epoch-level values are reduced across DDP ranks; the accuracy metric syncs its own counts.
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, sync_dist=not on_step
        )
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise RuntimeError("LogisticRegression needs an optimizer factory to train.")
        return self.optimizer_factory(self.parameters())
