"""Multinomial logistic regression as a LightningModule: one linear layer, raw logits, cross-entropy."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Literal

import lightning as L
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

TRAIN_COUNT_KEY = "train_accuracy_count"  # in each checkpoint: the training epoch's [correct, seen] per rank

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class LogisticRegression(L.LightningModule):
    """`nn.Linear(784, 10)` trained with `CrossEntropyLoss`, which applies the softmax itself.

    `optimizer` and `scheduler` are factories (Hydra's `_partial_: true`) that this module calls with its own
    parameters and optimizer, in `configure_optimizers`, the way Lightning expects: Lightning then steps the
    scheduler (every `scheduler_interval`), and its gradient clipping, gradient accumulation and learning-rate
    finder work on this module as on any other. The factories are left out of the saved hyperparameters, so
    that checkpoints hold plain values only and load under `torch.load(weights_only=True)`.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        input_size: int = 784,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.linear = nn.Linear(input_size, num_classes)
        self.loss = nn.CrossEntropyLoss()
        # The training epoch's correct predictions, counted on the model's device: adding to a tensor needs
        # no device sync, and the count is logged once per epoch (a metric object's `update` per step would
        # cost more than this model's whole step; docs/performance.md).
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
        if self.loggers_write_this_step():
            self.log("train/loss", loss)
        self.train_correct += (logits.argmax(1) == labels).sum()
        self.train_seen += len(labels)
        return loss

    def loggers_write_this_step(self) -> bool:
        """Whether Lightning hands this step's logged values to the loggers (its `log_every_n_steps` rule).

        Lightning keeps every `self.log` value but passes a step's values on only every `log_every_n_steps`
        optimizer steps, or when the fit is about to stop; on the other steps `self.log` would cost more than
        this model's forward and backward pass for values that nobody sees. Asked inside `training_step`,
        before the optimizer step that `trainer.global_step` counts. Not on the progress bar either: it turns
        each value into a Python number after every step, which on a GPU means waiting for the device.
        """
        trainer = self.trainer
        every = trainer.log_every_n_steps
        step_logs = every > 0 and (trainer.should_stop or (trainer.global_step + 1) % every == 0)
        return bool(trainer.fast_dev_run) or step_logs

    def on_train_epoch_start(self) -> None:
        self.train_correct.zero_()
        self.train_seen = 0

    def on_train_epoch_end(self) -> None:
        # Every DDP rank sees as many samples as the others, so the mean over ranks is the overall accuracy.
        accuracy = self.train_correct / max(self.train_seen, 1)
        self.log("train/acc", accuracy, prog_bar=True, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A run resumed mid-epoch (Lightning then skips `on_train_epoch_start`) goes on with the epoch's
        # count, each DDP rank with its own: every rank saves, and rank 0 writes them all.
        count = torch.stack([self.train_correct, torch.tensor(self.train_seen, device=self.device)])
        checkpoint[TRAIN_COUNT_KEY] = self.all_gather(count).cpu().reshape(-1, 2).tolist()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        try:
            world_size = self.trainer.world_size
        except RuntimeError:  # not attached to a Trainer (`load_from_checkpoint`): nothing to go on with
            return
        counts = checkpoint.get(TRAIN_COUNT_KEY, [])
        if len(counts) == world_size:  # resumed with another number of processes: the count starts again
            correct, seen = counts[self.global_rank]
            self.train_correct.fill_(correct)
            self.train_seen = seen

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

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("LogisticRegression needs an optimizer factory to train.")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        options = {}
        # A schedule over the whole run (OneCycleLR) needs the run's length in optimizer steps, which depends
        # on the data, the batch size, max_epochs and accumulation: Lightning works it out.
        takes = inspect.signature(self.scheduler_factory).parameters
        if "total_steps" in takes and takes["total_steps"].default is None:
            options["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **options)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }
