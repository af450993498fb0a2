"""`train.py`'s fit loop takes exactly the steps of a plain PyTorch loop: its speed cuts change no result."""

from __future__ import annotations

import csv
import functools
import importlib.util
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from helpers import ROOT
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.core.model import LogisticRegression


def fit_plain(*args, **kwargs) -> dict:
    """`benchmarks/plain_loop.py`'s loop (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("plain_loop", ROOT / "benchmarks" / "plain_loop.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fit_plain(*args, **kwargs)


@pytest.mark.slow
def test_same_weights_and_logged_losses_as_a_plain_loop(tiny_mnist: Path, tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    model = LogisticRegression(optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    data = MNISTDataModule(data_dir=str(tiny_mnist), batch_size=50, val_size=100, shuffle_seed=0)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=CSVLogger(tmp_path, name="csv", version=""),
        log_every_n_steps=3,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=data)
    plain = fit_plain(tiny_mnist, epochs=2, lr=0.1, batch_size=50, seed=0, val_size=100)

    assert trainer.global_step == len(plain["losses"]) == 20
    assert torch.equal(model.net.weight, plain["model"].weight)
    assert torch.equal(model.net.bias, plain["model"].bias)
    # The last epoch's accuracies: the training count starts afresh each epoch.
    assert float(trainer.callback_metrics["train/acc"]) == plain["train/acc"]
    assert float(trainer.callback_metrics["val/acc"]) == plain["val/acc"]
    # train/loss is logged on every third step only, and each value logged is that very step's loss.
    with open(tmp_path / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["train/loss"]]
    logged = {int(row["step"]): float(row["train/loss"]) for row in rows}
    assert sorted(logged) == [2, 5, 8, 11, 14, 17]
    assert all(loss == float(plain["losses"][step]) for step, loss in logged.items())
