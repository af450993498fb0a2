"""The fit-loop baseline: `python train.py`'s training steps as a plain PyTorch loop, with no Lightning.

Same data (the data module's in-memory splits), same batches in the same order (its `EpochOrder`), same
initialisation (seeded as `train.py` seeds), same SGD steps, the same count of correct training predictions
and the same per-epoch validation; it keeps no checkpoints and logs nothing. Its fit time (timed as
`train.py`'s: from reading the data to the trained model) is the floor that `train.py`'s fit loop is
measured against, and its accuracies match a `train.py` run with the same settings.

    python benchmarks/plain_loop.py [--epochs 5] [--lr 0.001] [--batch-size 100] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_logreg.core.data import EpochOrder, MNISTDataModule, TensorBatches

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def accuracy(model: nn.Module, batches: TensorBatches) -> float:
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in batches)
    return correct / len(batches.labels)


def fit_plain(
    data_dir: str | Path = DATA_DIR,
    epochs: int = 5,
    lr: float = 0.001,
    batch_size: int = 100,
    seed: int = 0,
    val_size: int = 5000,
) -> dict[str, Any]:
    """Train and test as `python train.py` does: times, accuracies, the model and every step's loss."""
    data = MNISTDataModule(str(data_dir), batch_size=batch_size, val_size=val_size, shuffle_seed=seed)
    started = time.perf_counter()  # timed as train.py times `trainer.fit`, which prepares the data itself
    data.prepare_data()
    data.setup()
    torch.manual_seed(seed)  # what `seed_everything` does for torch before `train.py` builds the model
    model = nn.Linear(784, 10)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    order = EpochOrder(len(data.splits["train"][1]), shuffle=True, seed=seed)
    train_batches = TensorBatches(*data.splits["train"], batch_size, order)
    val_batches = TensorBatches(*data.splits["val"], 1000, EpochOrder(val_size, shuffle=False))

    losses = []
    for epoch in range(epochs):
        order.set_epoch(epoch)
        correct = torch.zeros((), dtype=torch.long)
        for images, labels in train_batches:
            logits = model(images)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            correct += (logits.argmax(1) == labels).sum()  # train.py's training accuracy, without a sync
        train_acc = int(correct) / len(train_batches.labels)
        val_acc = accuracy(model, val_batches)
    fit_time = time.perf_counter() - started

    test = data.splits["test"]
    test_acc = accuracy(model, TensorBatches(*test, 1000, EpochOrder(len(test[1]), shuffle=False)))
    return {
        "fit_time_s": fit_time,
        "train/acc": train_acc,
        "val/acc": val_acc,
        "test/acc": test_acc,
        "model": model,
        "losses": losses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, as train.py's cpu_threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = fit_plain(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    print(json.dumps({key: results[key] for key in ("fit_time_s", "val/acc", "test/acc")}))


if __name__ == "__main__":
    main()
