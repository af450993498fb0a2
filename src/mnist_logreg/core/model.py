"""The classifier as a LightningModule: input transform, network, cross-entropy, accuracy, optimizers.

A checkpoint of this module is the whole classifier: `LogisticRegression.load_from_checkpoint(path)` rebuilds
the input transform (identity, or the deskew) and the network from the checkpoint's hyperparameters, and
`model(images)` on images as read gives the accuracy the run recorded. The hyperparameters also say what it
reads and answers: the input's `C x H x W` (`input_shape`) and the classes' names (`class_names`), both
taken from the data it was trained on (docs/your_data.md).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, cast

import lightning as L
import torch
from hydra.utils import get_object, instantiate
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from mnist_logreg.core.deskew import Deskew
from mnist_logreg.errors import UserError

TRAIN_COUNT_KEY = "train_accuracy_count"  # in each checkpoint: the training epoch's [correct, seen] per rank

MNIST_SHAPE = (1, 28, 28)  # C x H x W: what a checkpoint that does not say was trained on


def linear_spec(input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Multinomial logistic regression: one linear layer from the image's pixels to the classes' logits."""
    return {"_target_": "torch.nn.Linear", "in_features": math.prod(input_shape), "out_features": num_classes}


# The default network: from MNIST's 784 pixels to 10 logits.
LINEAR = linear_spec(MNIST_SHAPE, 10)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def build_net(spec: Mapping[str, Any]) -> nn.Module:
    """The network a `_target_` spec describes (`conf/model/net/`), built with Hydra's `instantiate`.

    The spec is a checkpoint's hyperparameter, so every `_target_` in it must be a `torch.nn.Module` class:
    a checkpoint can then build modules, and call nothing else.
    """
    _check_targets(spec)
    return instantiate(dict(spec), _convert_="all")


def _check_targets(node: Any) -> None:
    if isinstance(node, Mapping):
        if "_target_" in node:
            target = get_object(str(node["_target_"]))
            if not (isinstance(target, type) and issubclass(target, nn.Module)):
                raise TypeError(f"model.net: {node['_target_']} is not a torch.nn.Module")
        for value in node.values():
            _check_targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _check_targets(value)


class LogisticRegression(L.LightningModule):
    """`net` (default one `nn.Linear` from the pixels to the classes) on the images after `deskew` (or none),
    trained with `CrossEntropyLoss`, which applies the softmax itself.

    `input_shape` (`C x H x W`, default MNIST's 1 x 28 x 28), `num_classes` and `class_names` describe the
    data; `assembly` passes the data module's (docs/your_data.md). Left out, the number of classes is the
    network's output size and the names are the indices, as in a checkpoint written before they existed.

    `net` is a plain `_target_` spec, not a module, so that it is saved with the other hyperparameters and a
    checkpoint rebuilds the network by itself (`conf/model/net/mlp.yaml` swaps in another one).
    `optimizer` and `scheduler` are factories (Hydra's `_partial_: true`) that this module calls with its own
    parameters and optimizer in `configure_optimizers`, the way Lightning expects: Lightning then steps the
    scheduler, and its gradient clipping, accumulation and learning-rate finder work. The factories are left
    out of the saved hyperparameters: checkpoints hold plain values only and load with `weights_only=True`.
    """

    # What `__init__` sets, as their types: nn.Module's attribute lookup would type them `Tensor | Module`.
    transform: nn.Module
    net: nn.Module
    train_correct: torch.Tensor  # a buffer

    def __init__(
        self,
        net: Mapping[str, Any] | None = None,
        deskew: bool = False,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        input_shape: Sequence[int] | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        input_shape = tuple(input_shape or MNIST_SHAPE)
        if len(input_shape) != 3 or not all(isinstance(n, int) and n > 0 for n in input_shape):
            raise ValueError(f"model.input_shape={list(input_shape)} is invalid: it must be [C, H, W].")
        if deskew and input_shape != MNIST_SHAPE:
            raise ValueError(
                f"model.deskew=true deskews 1 x 28 x 28 digits, and the images are "
                f"{' x '.join(map(str, input_shape))}: use model.deskew=false."
            )
        if net is None:
            net = linear_spec(input_shape, num_classes or (len(class_names) if class_names else 10))
        net = dict(net)  # saved as a plain dict: the checkpoint says which network it holds
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        # Part of the model, not of the data: whoever feeds it images as read gets what training saw.
        self.transform = Deskew() if deskew else nn.Identity()
        self.net = build_net(net)
        self.loss = nn.CrossEntropyLoss()
        # Lightning's model summary runs this through the model for the shapes and FLOPs it shows.
        example = torch.zeros(1, *input_shape)
        self.example_input_array = example
        # The training epoch's correct predictions, counted on the model's device: adding to a tensor needs
        # no device sync, and the count is logged once per epoch (a metric object's `update` per step would
        # cost more than this model's whole step; docs/performance.md).
        self.register_buffer("train_correct", torch.zeros((), dtype=torch.long), persistent=False)
        self.train_seen = 0
        # Set by whoever hands this model a data module that applied its input transform to the training and
        # validation splits as it read them (`runs/assembly.build_data_and_model`): those batches go to the
        # network as they are, one deskew per image rather than one per image and epoch.
        self.fit_batches_transformed = False
        num_classes = self._check_net(example, num_classes)
        class_names = [str(c) for c in class_names] if class_names else [str(c) for c in range(num_classes)]
        if len(class_names) != num_classes:
            raise ValueError(
                f"the data names {len(class_names)} classes and the network (model.net) answers "
                f"{num_classes}: build the network for {len(class_names)} classes."
            )
        # Saved filled in, as plain values: the checkpoint alone says what the model reads and answers.
        self.hparams.update(input_shape=list(input_shape), num_classes=num_classes, class_names=class_names)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", validate_args=False)
        self.test_acc = self.val_acc.clone()
        self.test_class_acc = MulticlassAccuracy(num_classes, average=None, validate_args=False)

    def _check_net(self, example: torch.Tensor, num_classes: int | None) -> int:
        """The network's number of outputs for `example` (a batch of one image); a network that cannot read
        the input or answers another number of classes than the data has is refused in one line."""
        shape = " x ".join(map(str, example.shape[1:]))
        try:
            with torch.no_grad():
                outputs = self.net(example.flatten(1)).shape[1]
        except RuntimeError as error:
            raise ValueError(
                f"model.net cannot read {shape} images ({str(error).splitlines()[0]}): size its first layer "
                "for them, e.g. in_features: ${prod:${model.input_shape}} (conf/model/net/linear.yaml)."
            ) from None
        if num_classes is not None and outputs != num_classes:
            raise ValueError(
                f"model.net answers {outputs} classes and the data has {num_classes}: size its last layer "
                "for them, e.g. out_features: ${model.num_classes} (conf/model/net/linear.yaml)."
            )
        return outputs

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """`C x H x W`: the shape of one image the model reads."""
        return tuple(self.hparams["input_shape"])

    @property
    def class_names(self) -> list[str]:
        """Each class's name, by index."""
        return list(self.hparams["class_names"])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for images as read, `N x C x H x W` (`N x H x W` for one channel, or `N x C*H*W`): uint8
        pixels (0 to 255) or floats in [0, 1]."""
        if images.dtype == torch.uint8:  # as PIL, numpy and most image libraries give them
            images = images.float().div(255.0)
        elif self._checks_range():
            check_unit_range(images)
        return self.net(self.transform(images).flatten(1))

    def _checks_range(self) -> bool:
        """Whether `forward` checks that float pixels are in [0, 1]: in a user's own code, not in a Trainer's
        loops, whose data modules promise that range (docs/your_data.md) and where the check would wait on
        the device once per batch, nor while torch traces the model for export."""
        if torch.compiler.is_compiling() or torch.compiler.is_exporting():
            return False
        try:
            self.trainer  # noqa: B018 -- raises when the model is not attached to a Trainer
        except RuntimeError:
            return True
        return False

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self._fit_logits(images)
        loss = self.loss(logits, labels)
        if self.loggers_write_this_step():
            self.log("train/loss", loss)
        self.train_correct += (logits.argmax(1) == labels).sum()
        self.train_seen += len(labels)
        return loss

    def loggers_write_this_step(self) -> bool:
        """Whether the loggers get this step's logged values: every `log_every_n_steps` optimizer steps, or
        when the fit is about to stop, as Lightning hands them on.

        A speed choice, measured (docs/performance.md): Lightning keeps every `self.log` value but passes a
        step's values on only on those steps, and on the others a `self.log` costs more than this model's
        forward and backward pass. The rule is Lightning's (its logger connector's, which is private), read
        from the trainer's public settings; `tests/test_fit_loop.py` fails if the two part ways. Not on the
        progress bar either: that turns each value into a Python number, on a GPU a wait for the device.
        """
        trainer = self.trainer
        every = trainer.log_every_n_steps  # type: ignore[attr-defined]  # set by Lightning's logger connector
        step_logs = every > 0 and (trainer.should_stop or (trainer.global_step + 1) % every == 0)
        return bool(trainer.fast_dev_run) or step_logs  # type: ignore[attr-defined]  # set by Trainer.__init__

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
        gathered = cast(torch.Tensor, self.all_gather(count))  # a tensor gathers into a tensor
        checkpoint[TRAIN_COUNT_KEY] = gathered.cpu().reshape(-1, 2).tolist()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_checkpoint(checkpoint)
        if checkpoint["hyper_parameters"].get("deskew") and not self.hparams["deskew"]:  # an upgraded one
            self.hparams["deskew"] = True
            self.transform = Deskew()
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

    def on_test_epoch_end(self) -> None:
        # Each class's accuracy (its recall), by name: the metric syncs its own counts across DDP ranks.
        accuracies = self.test_class_acc.compute()
        for name, accuracy in zip(self.class_names, accuracies, strict=True):
            self.log(f"test/class_acc/{metric_name(name)}", accuracy)
        self.test_class_acc.reset()

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> None:
        images, labels = batch
        logits = self._fit_logits(images) if stage == "val" else self(images)
        accuracy = getattr(self, f"{stage}_acc")
        accuracy.update(logits, labels)
        if stage == "test":
            self.test_class_acc.update(logits, labels)
        # Epoch means, reduced across DDP ranks; the accuracy metric syncs its own counts.
        self.log(f"{stage}/loss", self.loss(logits, labels), prog_bar=True, sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)

    def _fit_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a training or validation batch, transformed already or not (see `__init__`)."""
        return self.net(images.flatten(1)) if self.fit_batches_transformed else self(images)

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise RuntimeError("LogisticRegression needs an optimizer factory to train.")
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        options = {}
        # A schedule over the whole run (OneCycleLR) needs the run's length in optimizer steps, which depends
        # on the data, the batch size, max_epochs and accumulation: Lightning works it out. The factory's
        # own arguments say whether it takes one: `total_steps` left unset (None) in its config.
        takes = inspect.signature(self.scheduler_factory).parameters
        if "total_steps" in takes and takes["total_steps"].default is None:
            options["total_steps"] = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, **options)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }


def metric_name(class_name: str) -> str:
    """A class name as part of a metric's name: the characters a logger may refuse (MLflow takes letters,
    digits, `_-. /`) become `_`."""
    return re.sub(r"[^\w\-. ]", "_", class_name, flags=re.ASCII)


class PixelRangeError(UserError, ValueError):
    """Float pixels outside [0, 1]: a ValueError in a user's own code, one line from an entry point."""


def check_unit_range(images: torch.Tensor) -> None:
    """Float pixels must be in [0, 1], the scale the model trained on; 0-255 floats would answer wrong."""
    low, high = torch.aminmax(images.detach())
    if low < 0 or high > 1:
        raise PixelRangeError(
            f"images are {images.dtype} from {float(low):g} to {float(high):g}: the model reads pixels in "
            "[0, 1] (floats) or 0 to 255 (uint8); divide by 255 or pass uint8 images."
        )


def upgrade_checkpoint(checkpoint: dict[str, Any]) -> None:
    """A checkpoint written before the model held its input transform and its network as `net`: the deskew
    was the data module's (`datamodule_hyper_parameters.deskew`), the layer was `linear`. Upgraded in place,
    so that it loads, predicts and resumes as it did."""
    hparams = checkpoint.setdefault("hyper_parameters", {})
    if "net" in hparams:
        return
    hparams["net"] = dict(LINEAR)
    state = checkpoint.get("state_dict", {})
    for key in [k for k in state if k.startswith("linear.")]:
        state["net." + key.removeprefix("linear.")] = state.pop(key)
    hparams["deskew"] = bool((checkpoint.get("datamodule_hyper_parameters") or {}).get("deskew", False))
