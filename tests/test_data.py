"""The data module on a tiny synthetic MNIST: shapes, splits, shuffling, sharding, file checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from mnist_logreg.core.data import DataError, EpochOrder, MNISTDataModule, TensorBatches
from mnist_logreg.errors import UserError


def prepared(data_dir: Path, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=str(data_dir), **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


def test_each_stage_reads_only_the_splits_it_uses(tiny_mnist: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tiny_mnist), val_size=100)
    dm.prepare_data()
    dm.setup("test")  # eval.py, export.py: no training images read
    assert set(dm.splits) == {"test"}
    test_x = dm.splits["test"][0]
    dm.setup("fit")
    assert set(dm.splits) == {"train", "val", "test"} and dm.splits["test"][0] is test_x  # read once
    assert torch.equal(dm.splits["val"][0], prepared(tiny_mnist, val_size=100).splits["val"][0])


def test_splits_shapes_and_scale(tiny_mnist: Path) -> None:
    dm = prepared(tiny_mnist, val_size=100)
    (train_x, train_y), (val_x, _), (test_x, test_y) = (dm.splits[s] for s in ("train", "val", "test"))
    assert train_x.shape == (500, 784) and val_x.shape == (100, 784) and test_x.shape == (200, 784)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert dm.class_names == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"] and dm.input_shape == (
        1,
        28,
        28,
    )
    assert float(train_x.min()) >= 0.0 and float(train_x.max()) == 1.0
    # The test split is the official file, in file order.
    with gzip.open(tiny_mnist / "MNIST/raw/t10k-labels-idx1-ubyte.gz") as f:
        raw = f.read()[8:]
    assert test_y.tolist() == list(raw)


def test_validation_split_is_seeded_and_disjoint(tiny_mnist: Path) -> None:
    a, b = prepared(tiny_mnist, val_size=100), prepared(tiny_mnist, val_size=100)
    c = prepared(tiny_mnist, val_size=100, split_seed=1)
    assert torch.equal(a.splits["val"][0], b.splits["val"][0])
    assert not torch.equal(a.splits["val"][0], c.splits["val"][0])
    train_rows = {tuple(r.tolist()) for r in a.splits["train"][0]}
    assert not any(tuple(r.tolist()) in train_rows for r in a.splits["val"][0])


def test_each_epoch_is_a_seeded_permutation() -> None:
    order = EpochOrder(1000, shuffle=True, seed=3)
    epoch0 = order.indices()
    assert sorted(epoch0.tolist()) == list(range(1000))
    order.set_epoch(1)
    epoch1 = order.indices()
    assert not torch.equal(epoch0, epoch1)
    again = EpochOrder(1000, shuffle=True, seed=3)
    again.set_epoch(1)
    assert torch.equal(again.indices(), epoch1)


def test_batches_cover_the_split_once() -> None:
    images = torch.arange(250, dtype=torch.float32).unsqueeze(1)
    labels = torch.arange(250)
    batches = TensorBatches(images, labels, 100, EpochOrder(250, shuffle=True))
    seen = [y for _, y in batches]
    assert len(batches) == len(seen) == 3 and [len(y) for y in seen] == [100, 100, 50]
    assert sorted(torch.cat(seen).tolist()) == list(range(250))
    sequential = TensorBatches(images, labels, 100, EpochOrder(250, shuffle=False))
    assert torch.cat([y for _, y in sequential]).tolist() == list(range(250))


@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_get_disjoint_equal_shards(shuffle: bool) -> None:
    shards = [EpochOrder(1000, shuffle, seed=0, rank=r, world_size=2).indices() for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 500
    assert sorted(torch.cat(shards).tolist()) == list(range(1000))


def test_bad_sizes_are_refused(tiny_mnist: Path) -> None:
    with pytest.raises(UserError, match="batch_size=0 is invalid"):
        MNISTDataModule(data_dir=str(tiny_mnist), batch_size=0)
    with pytest.raises(UserError, match="val_size=600 leaves no training data"):
        prepared(tiny_mnist, val_size=600)


def test_corrupt_file_is_named(tiny_mnist: Path) -> None:
    path = tiny_mnist / "MNIST/raw/train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz is corrupt.*git checkout"):
        prepared(tiny_mnist)


def test_truncated_extraction_is_redone(tiny_mnist: Path) -> None:
    expected = prepared(tiny_mnist, val_size=100).splits["train"][0]
    extracted = tiny_mnist / "MNIST/raw/train-images-idx3-ubyte"
    extracted.write_bytes(extracted.read_bytes()[:1000])
    assert torch.equal(prepared(tiny_mnist, val_size=100).splits["train"][0], expected)


def test_verified_data_is_read_without_writing(tiny_mnist: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared, read-only copy of the data works once it has been extracted."""
    expected = prepared(tiny_mnist, val_size=100).splits["val"][0]

    def no_writes(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("mnist_logreg.core.data.FileLock", no_writes)
    assert torch.equal(prepared(tiny_mnist, val_size=100).splits["val"][0], expected)
    (tiny_mnist / "MNIST/raw/.extracted.json").unlink()  # now it must extract, and cannot write
    with pytest.raises(
        DataError, match=r"needs extracting, but it cannot be written \(Read-only file system\)"
    ):
        prepared(tiny_mnist, val_size=100)


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [
        (5, 5, r"^data\.fold=5 is invalid: it must be from 0 to 4 \(data\.folds=5\)\.$"),
        (5, -1, r"^data\.fold=-1 is invalid: it must be from 0 to 4"),
        (1, 0, r"^data\.folds=1 is invalid: it must be a whole number >= 2"),
        (5, None, r"^data\.folds=5 needs data\.fold, the fold that validates: 0 to 4"),
        (None, 2, r"^data\.fold=2 needs data\.folds"),
    ],
)
def test_impossible_folds_are_refused_in_one_line(folds, fold, message: str) -> None:
    with pytest.raises(UserError, match=message):
        MNISTDataModule(folds=folds, fold=fold)


def test_fold_i_of_k_validates_and_the_test_split_stays(tiny_mnist: Path) -> None:
    plain = prepared(tiny_mnist, val_size=100)
    folds = [prepared(tiny_mnist, folds=3, fold=i) for i in range(3)]
    assert [len(dm.splits["val"][1]) for dm in folds] == [200, 200, 200]  # 600 training images
    assert all(len(dm.splits["train"][1]) == 400 for dm in folds)
    val_rows = [{tuple(r.tolist()) for r in dm.splits["val"][0]} for dm in folds]
    assert not val_rows[0] & val_rows[1] and not val_rows[1] & val_rows[2]
    assert all(torch.equal(dm.splits["test"][0], plain.splits["test"][0]) for dm in folds)
