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

    A training step is so small (a 100 x 784 by 784 x 10 product) that Lightning's bookkeeping around it
    costs more than the arithmetic, so `training_step` keeps to the tutorial's own three lines
    (`zero_grad`, `backward`, `step`: manual optimisation, without automatic optimisation's closure and
    hooks), counts its correct predictions with two tensor operations, and calls `self.log` only on the
    steps the loggers write. README.md, "Performance", has the measurements. Manual optimisation means
    that Trainer flags which act on the optimiser step (`gradient_clip_val`, `accumulate_grad_batches`)
    do not apply; Lightning refuses them with an error.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        input_size: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"], logger=False)
        self.automatic_optimization = False
        self.optimizer_factory = optimizer
        self.linear = nn.Linear(input_size, num_classes)
        self.loss = nn.CrossEntropyLoss()
        # The training epoch's correct predictions, kept on the model's device: adding to it needs no sync.
        self.register_buffer("train_correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.train_seen = 0
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = self.val_acc.clone()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images shaped `N x 784` or `N x 1 x 28 x 28`, pixels in [0, 1]."""
        return self.linear(images.flatten(1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = self.loss(logits, labels)
        # Not on the progress bar: Lightning turns each progress-bar value into a Python number after every
        # step, which on a GPU means waiting for the device. Asked before `optimizer.step()` counts the step.
        if self._loggers_write_this_step():
            self.log("train/loss", loss)
        # A metric object's `update` costs seven times these two operations; the count is logged per epoch.
        self.train_correct += (logits.argmax(1) == labels).sum()
        self.train_seen += len(labels)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss

    def _loggers_write_this_step(self) -> bool:
        """Whether Lightning hands this step's values to the loggers: every `log_every_n_steps` steps.

        Lightning's own rule. Its loggers never see the other steps' values, yet `self.log` costs about twice
        this model's whole forward and backward pass, so on those steps it is not called.
        """
        trainer = self.trainer
        every = trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or (every > 0 and (trainer.global_step + 1) % every == 0)

    def on_train_epoch_start(self) -> None:
        self.train_correct.zero_()
        self.train_seen = 0

    def on_train_epoch_end(self) -> None:
        # Every DDP rank sees as many samples as the others, so the mean over ranks is the overall accuracy.
        accuracy = self.train_correct / max(self.train_seen, 1)
        self.log("train/acc", accuracy, prog_bar=True, sync_dist=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        logits = self(images)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy.update(logits, labels)
        # Epoch means, reduced across DDP ranks; the accuracy metric syncs its own counts.
        self.log(f"{stage}/loss", self.loss(logits, labels), prog_bar=True, sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise RuntimeError("LogisticRegression needs an optimizer factory to train.")
        return self.optimizer_factory(self.parameters())
