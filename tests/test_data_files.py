"""The MNIST files: a missing, corrupt or tampered file is named with the fix, and nothing trains."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torchvision.datasets import MNIST

from mnist_logreg.core.data import DataError, MNISTDataModule
from mnist_logreg.runs.training import train

RAW = Path("MNIST") / "raw"


def load(data_dir: Path) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), val_size=100)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads fail at once, as with no network (a closed local port, so no test needs the network)."""
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])


def test_a_tampered_gz_of_the_same_size_is_named(tiny_mnist: Path) -> None:
    path = tiny_mnist / RAW / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(
        DataError, match=r"t10k-images-idx3-ubyte\.gz is corrupt .*git checkout -- data/MNIST/raw"
    ):
        load(tiny_mnist)


def test_a_missing_gz_offline_is_named_even_with_extracted_files_left(
    tiny_mnist: Path, offline: None
) -> None:
    load(tiny_mnist)  # extracts: the extracted files alone cannot be checked, so they are not trusted
    (tiny_mnist / RAW / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        DataError, match=r"missing: train-labels-idx1-ubyte\.gz\) and the download failed"
    ) as failed:
        load(tiny_mnist)
    assert "git checkout -- data/MNIST/raw" in str(failed.value) and "\n" not in str(failed.value)


def test_no_data_offline_is_one_clear_line(tmp_path: Path, offline: None) -> None:
    with pytest.raises(
        DataError, match=r"MNIST is not in .* and the download failed \(.*\)\. Run from"
    ) as failed:
        load(tmp_path / "empty")
    assert "\n" not in str(failed.value) and "Traceback" not in str(failed.value)


def test_a_changed_extracted_file_is_extracted_again(
    tiny_mnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = load(tiny_mnist).splits["train"][1]
    extracted = tiny_mnist / RAW / "train-labels-idx1-ubyte"
    data = bytearray(extracted.read_bytes())
    data[8:] = bytes((label + 1) % 10 for label in data[8:])  # every label wrong, the size unchanged
    extracted.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        labels = load(tiny_mnist).splits["train"][1]
    assert torch.equal(labels, expected)
    assert "train-labels-idx1-ubyte changed since it was extracted" in caplog.text


def test_nothing_trains_on_a_corrupt_file(compose_train, tiny_mnist: Path, tmp_path: Path) -> None:
    path = tiny_mnist / RAW / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    cfg = compose_train(f"paths.data_dir={tiny_mnist}", "callbacks.progress_bar.refresh_rate=0")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is corrupt"):
        train(cfg)
    assert (
        not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "metrics.json").exists()
    )
