"""Checkpoint writing, the checks on `ckpt_path`, and what `ResumableCheckpoint` adds to Lightning's."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from mnist_logreg.callbacks.checkpoint import ResumableCheckpoint
from mnist_logreg.core.checkpoints import AtomicCheckpointIO, CheckpointError
from mnist_logreg.runs.training import train

TINY = (
    "data.val_size=100",
    "data.batch_size=50",
    "trainer.max_epochs=1",
    "callbacks.progress_bar.refresh_rate=0",
)


def test_an_interrupted_write_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(3)}, path)

    def killed_mid_write(obj: object, f) -> None:
        f.write(b"PK\x03\x04 half a zip archive")
        raise KeyboardInterrupt  # the process dies here

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(3)}, path)
    monkeypatch.undo()
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 1 and torch.equal(checkpoint["weights"], torch.ones(3))


def test_the_trainer_writes_checkpoints_atomically(compose_train) -> None:
    trainer = instantiate(compose_train("trainer=cpu").trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


@pytest.fixture
def trained(compose_train, tiny_mnist: Path, tmp_path: Path) -> Path:
    """A finished tiny run's last.ckpt, copied out of its run directory."""
    train(compose_train(f"paths.data_dir={tiny_mnist}", *TINY))
    saved = tmp_path / "saved.ckpt"
    shutil.copyfile(tmp_path / "run" / "checkpoints" / "last.ckpt", saved)
    return saved


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=25", r"was trained with data\.batch_size=50, this run has 25"),
        ("seed=1", r"was trained with data\.shuffle_seed=0 \(it follows `seed`\), this run has 1"),
        (
            "optimizer.lr=0.01",
            r"was trained with optimizer\.lr=0\.001, this run has 0\.01.*pass optimizer\.lr=0\.001",
        ),
        ("optimizer=adam", r"was trained with another optimizer than this run's torch\.optim\.adam\.Adam"),
        (
            "model/net=mlp",
            r"does not fit this model: net\.0\.bias is \(128,\) here and None in the checkpoint",
        ),
    ],
)
def test_a_checkpoint_of_another_setup_is_refused(
    compose_train, tiny_mnist: Path, trained: Path, override: str, message: str
) -> None:
    cfg = compose_train(f"paths.data_dir={tiny_mnist}", *TINY, f"ckpt_path={trained}", override)
    with pytest.raises(CheckpointError, match=message):
        train(cfg)


def test_a_missing_or_unreadable_checkpoint_is_refused(
    compose_train, tiny_mnist: Path, tmp_path: Path
) -> None:
    cases = {
        tmp_path / "nowhere.ckpt": r"nowhere\.ckpt does not exist: give a checkpoint file, such as .*last",
        tmp_path / "cut.ckpt": r"cut\.ckpt is not a readable checkpoint \(truncated",
        tmp_path
        / "weights.ckpt": r"weights\.ckpt is not a checkpoint written by train\.py \(it has no loops",
    }
    torch.save({"state_dict": {"net.weight": torch.zeros(10, 784)}}, tmp_path / "weights.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "weights.ckpt").read_bytes()[:300])
    for path, message in cases.items():
        with pytest.raises(CheckpointError, match=message) as refused:
            train(compose_train(f"paths.data_dir={tiny_mnist}", *TINY, f"ckpt_path={path}"))
        assert "\n" not in str(refused.value)


def test_resuming_in_a_new_directory_keeps_the_best_checkpoint(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    (old / "best.ckpt").write_bytes(b"the best weights")
    before = ResumableCheckpoint(dirpath=old, filename="best", monitor="val/acc", mode="max")
    before.best_k_models = {str(old / "best.ckpt"): torch.tensor(0.9)}
    before.best_model_path = before.kth_best_model_path = str(old / "best.ckpt")
    before.best_model_score = before.kth_value = torch.tensor(0.9)
    state = before.state_dict()

    after = ResumableCheckpoint(dirpath=new, filename="best", monitor="val/acc", mode="max")
    after.load_state_dict(state)
    assert after.best_model_path == str(new / "best.ckpt") and after.best_model_score == 0.9
    assert (new / "best.ckpt").read_bytes() == b"the best weights"
    assert (old / "best.ckpt").read_bytes() == b"the best weights"  # the old run is left as it was
    # Lightning's own callback forgets the score, so any later validation would replace the best.
    lightning = ModelCheckpoint(dirpath=new / "plain", filename="best", monitor="val/acc", mode="max")
    with pytest.warns(UserWarning, match="dirpath has changed"):
        lightning.load_state_dict(state)
    assert lightning.best_model_score is None


def test_rng_states_come_back_from_a_checkpoint(tmp_path: Path) -> None:
    callback = ResumableCheckpoint(dirpath=tmp_path)
    torch.save({"state": callback.state_dict()}, tmp_path / "rng.ckpt")
    draws = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    callback.load_state_dict(torch.load(tmp_path / "rng.ckpt", weights_only=True)["state"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


@pytest.mark.slow
def test_resuming_with_fewer_epochs_than_the_checkpoint_has_is_refused(
    compose_train, tiny_mnist: Path, tmp_path: Path
) -> None:
    train(compose_train(f"paths.data_dir={tiny_mnist}", *TINY, "trainer.max_epochs=3"))
    last = tmp_path / "last.ckpt"
    shutil.copyfile(tmp_path / "run" / "checkpoints" / "last.ckpt", last)
    cfg = compose_train(f"paths.data_dir={tiny_mnist}", *TINY, f"ckpt_path={last}")  # max_epochs=1
    with pytest.raises(CheckpointError, match=r"stopped in epoch 2, past this run's trainer\.max_epochs=1"):
        train(cfg)


@pytest.mark.slow
def test_a_run_without_the_checkpoint_callback_still_finishes(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train(
        f"paths.data_dir={tiny_mnist}", *TINY, "optimizer.lr=0.5", "callbacks.model_checkpoint=null"
    )
    metrics = train(cfg)
    assert metrics["status"] == "completed" and metrics["val/acc"] > 0.5 and metrics["test/acc"] > 0.5
