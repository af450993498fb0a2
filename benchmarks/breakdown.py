"""Where `python train.py`'s fit time goes: each speed cut undone, and each feature removed, one at a time.

    python benchmarks/breakdown.py [--rounds 3]

Part 1 times the parts of one training step on their own (the floor that no loop can go below). Part 2 runs
`train.py`'s training in this one process (imports paid once), alternating the variants below round by round,
and prints each one's median fit time against `train.py` as it is. The "undone" variants are the code each
cut replaced, kept here as subclasses, and "manual optimisation" is the step the model no longer uses; the
"without" variants remove a feature by a config override.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import statistics
import sys
import tempfile
import timeit
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torchmetrics.classification import MulticlassAccuracy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from plain_loop import fit_plain  # noqa: E402  (benchmarks/ is this script's own directory)

from mnist_logreg.core.model import LogisticRegression  # noqa: E402
from mnist_logreg.runs.training import train  # noqa: E402

STEPS = 5 * 550


class ManualOptimisation(LogisticRegression):
    """The tutorial's three lines (`zero_grad`, `backward`, `step`) in `training_step`, without automatic
    optimisation's closure and hooks: what automatic optimisation costs. Manual optimisation locks out
    Lightning's schedulers, clipping, accumulation and LR finder, so the model does not use it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return loss


class LogEveryStep(LogisticRegression):
    """The public way: `self.log("train/loss", ...)` on every step, instead of only on the steps whose values
    Lightning hands to the loggers (`LogisticRegression.loggers_write_this_step`)."""

    def loggers_write_this_step(self) -> bool:
        return True


class MetricUpdateEveryStep(LogisticRegression):
    """Undone: torchmetrics' accuracy called and logged on every step instead of the two-operation count."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.train_acc = MulticlassAccuracy(10, average="micro", validate_args=False)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        logits = self._fit_logits(images)
        loss = self.loss(logits, labels)
        if self.loggers_write_this_step():
            self.log("train/loss", loss)
        self.train_acc(logits, labels)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        pass


VARIANTS: dict[str, list[str]] = {
    "train.py as it is": [],
    "manual optimisation instead": ["model._target_=__main__.ManualOptimisation"],
    "undone: self.log every step (the public way)": ["model._target_=__main__.LogEveryStep"],
    "undone: metric update every step": ["model._target_=__main__.MetricUpdateEveryStep"],
    "undone: torch's default threads": ["cpu_threads=null"],
    "without: progress bar": ["callbacks.progress_bar.refresh_rate=0"],
    "without: sanity check": ["+trainer.num_sanity_val_steps=0"],
    "without: TensorBoard": ["~logger"],
    "without: checkpoints": [
        "~callbacks.model_checkpoint",
        "~callbacks.last_checkpoint",
        "+trainer.enable_checkpointing=false",
    ],
    "without: divergence check": ["callbacks.stop_on_divergence=null"],
    "without: Ctrl-C stop": ["callbacks.stop_on_interrupt=null"],
    "without: learning-rate monitor": ["callbacks.lr_monitor=null"],
    "without: all of these (Lightning alone)": [
        "~logger",
        "~callbacks",
        "+trainer.enable_checkpointing=false",
        "+trainer.num_sanity_val_steps=0",
    ],
}


def step_parts() -> dict[str, float]:
    """Microseconds per call of each part of a training step, on random data of MNIST's shape."""
    images, labels = torch.rand(55_000, 784), torch.randint(0, 10, (55_000,))
    order = torch.randperm(55_000)
    batch = order[:100]
    x, y = images[batch], labels[batch]
    model = torch.nn.Linear(784, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    metric = MulticlassAccuracy(10, average="micro", validate_args=False)
    correct = torch.zeros((), dtype=torch.long)
    logits = model(x).detach()

    def backward() -> None:
        loss_fn(model(x), y).backward()

    def count() -> None:
        correct.add_((logits.argmax(1) == y).sum())

    batches = iter(())

    def next_batch() -> torch.Tensor:
        nonlocal batches
        batch = next(batches, None)
        if batch is None:
            batches = iter(order.split(100))
            batch = next(batches)
        return batch

    parts = {
        "batch: images[idx] (advanced indexing)": lambda: images[next_batch()],
        "batch: images.index_select(0, idx)": lambda: images.index_select(0, next_batch()),
        "forward + loss": lambda: loss_fn(model(x), y),
        "forward + loss + backward": backward,
        "optimizer.zero_grad + step": lambda: (optimizer.zero_grad(), backward(), optimizer.step()),
        "accuracy: torchmetrics update": functools.partial(metric.update, logits, y),
        "accuracy: argmax/eq/sum count": count,
    }
    times = {name: min(timeit.repeat(fn, number=200, repeat=7)) / 200 * 1e6 for name, fn in parts.items()}
    times["optimizer.zero_grad + step"] -= times["forward + loss + backward"]
    times["backward"] = times.pop("forward + loss + backward") - times["forward + loss"]
    return times  # each part alone: they add up to one step


def compose_run(overrides: list[str], output_dir: str) -> DictConfig:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each variant, alternating (default 3)")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    logging.disable(logging.WARNING)  # Lightning's notices, once per run

    torch.set_num_threads(1)
    print("Part 1: one training step's parts (batch of 100, one thread), microseconds per call")
    for name, micros in step_parts().items():
        print(f"  {name:<40} {micros:7.1f}")

    fits: dict[str, list[float]] = {name: [] for name in [*VARIANTS, "plain PyTorch loop (the floor)"]}
    with tempfile.TemporaryDirectory(prefix="breakdown-") as tmp:
        for round_ in range(args.rounds):
            for i, (name, overrides) in enumerate(VARIANTS.items()):
                torch.set_num_threads(default_threads)  # as a fresh process starts; cpu_threads then applies
                cfg = compose_run(overrides, f"{tmp}/{round_}-{i}")
                with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
                    fits[name].append(train(cfg)["fit_time_s"])
            torch.set_num_threads(1)
            fits["plain PyTorch loop (the floor)"].append(fit_plain()["fit_time_s"])
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)

    base = statistics.median(fits["train.py as it is"])
    print(f"\nPart 2: fit time of {STEPS} steps with validation, medians of {args.rounds} rounds")
    print(f"  {'variant':<40} {'fit s':>7} {'vs train.py':>12} {'per step':>10}")
    for name, times in fits.items():
        fit = statistics.median(times)
        print(f"  {name:<40} {fit:7.2f} {fit - base:+11.2f}s {(fit - base) / STEPS * 1e6:+8.0f}us")


if __name__ == "__main__":
    main()
