"""MNIST held in memory as tensors and fed in whole batches.

The whole data set is 47 MB as uint8, so there is no reason to build one PIL image per sample the way a
`DataLoader` over torchvision's `MNIST` does: a batch is one index operation on a tensor.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock
from torch.utils.data import DistributedSampler
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from mnist_logreg.core.splits import fold_split
from mnist_logreg.errors import UserError
from mnist_logreg.files import write_json

log = logging.getLogger(__name__)

RESTORE_HINT = "restore the shipped files with `git checkout -- data/MNIST/raw`"


class DataError(UserError):
    """The MNIST files are missing, corrupt or cannot be fetched."""


class EpochOrder(DistributedSampler):
    """The samples one rank sees in one epoch, in order: torch's `DistributedSampler` over sample indices.

    A shuffled epoch's permutation is drawn from `seed + epoch` alone, so it does not depend on what ran
    before: a run resumed at epoch 3 sees what an uninterrupted run saw. Lightning calls `set_epoch` at the
    start of every epoch. Under DDP each rank takes every `world_size`-th sample, padded by wrap-around so
    that all ranks run the same number of batches (or they would wait on each other forever).
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        # The sampler takes only the len() of its dataset, which a range of the indices has.
        dataset = range(size)
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]

    def indices(self) -> torch.Tensor | None:
        """This rank's sample indices for the epoch; None means all samples in order (slices, no gather)."""
        if not self.shuffle and self.num_replicas == 1:
            return None
        return torch.tensor(list(iter(self)))


class TensorBatches:
    """Batches of `(images, labels)` cut from whole tensors: one gather per batch, no per-sample work.

    Resumable mid-epoch: Lightning saves `state_dict()` in every checkpoint and, on resume, calls
    `load_state_dict()` before the next iteration, so a resumed epoch skips the batches already trained on
    instead of training on them twice. The count is of batches handed out, which are the batches trained on:
    Lightning prefetches none from a loader that has a length.
    """

    # The two attributes of torch's `DataLoader` that Lightning reads off any loader that has a `sampler`: it
    # calls the sampler's `set_epoch` before every epoch. None, as on a DataLoader that batches by itself.
    batch_sampler = None

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, sampler: EpochOrder
    ) -> None:
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.sampler = sampler  # as on a DataLoader: Lightning calls its `set_epoch` before every epoch
        self.batches_done = 0  # in the current epoch
        self._resume: dict[str, int] = {}

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        indices = self.sampler.indices()
        if indices is not None:
            indices = indices.to(self.images.device)
        # A checkpoint written at an epoch's end resumes at the next epoch, which starts from its first batch.
        resume, self._resume = self._resume, {}
        skip = resume["batches_done"] if resume.get("epoch") == self.sampler.epoch else 0
        self.batches_done = skip
        for start in range(skip * self.batch_size, len(self.sampler), self.batch_size):
            self.batches_done += 1
            if indices is None:
                end = start + self.batch_size
                yield self.images[start:end], self.labels[start:end]
            else:
                batch = indices[start : start + self.batch_size]
                # Whole-row copies: faster than `self.images[batch]` on a CPU (docs/performance.md).
                yield self.images.index_select(0, batch), self.labels.index_select(0, batch)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the saved epoch where it stood; its order is drawn again from the seed and the epoch."""
        self._resume = dict(state)


class TensorDataModule(L.LightningDataModule):
    """Splits held whole in memory as `(images, labels)` tensors in `splits`, fed by `TensorBatches`.

    A subclass reads its data in `setup()` into `splits["train"]`, `["val"]` and `["test"]` (float images in
    [0, 1], int64 labels) and sets `class_names` and `input_shape` (C, H, W); batching, shuffling, sharding
    under DDP and mid-epoch resume are this class's.

    `transform`, when given, is the model's own input transform (`assembly.build_datamodule` passes it): a
    subclass applies it once to the training and validation splits as they are read (`_transformed`), and the
    model, seeing its own transform here, fits on those images as they are, instead of transforming every
    batch of every epoch again. The test split stays as read: the tested model transforms it, as it would
    anyone's images.
    """

    class_names: list[str] | None = None  # one per label, in label order; set by `setup()` at the latest
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of one image

    def __init__(
        self,
        batch_size: int,
        eval_batch_size: int,
        shuffle_seed: int,
        transform: torch.nn.Module | None,
    ) -> None:
        super().__init__()
        check_whole("batch_size", batch_size)
        check_whole("eval_batch_size", eval_batch_size)
        check_whole("shuffle_seed", shuffle_seed, minimum=0)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_seed = shuffle_seed
        self.transform = transform
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _transformed(self, images: torch.Tensor, chunk: int = 2000) -> torch.Tensor:
        """`transform` over a whole split, in place (no second copy of the split), a chunk at a time so that
        its intermediate tensors stay small enough to sit in the CPU's cache."""
        if self.transform is not None:
            with torch.no_grad():
                for part in images.split(chunk):
                    part.copy_(self.transform(part))
        return images

    def _batches(self, split: str, batch_size: int, shuffle: bool = False) -> TensorBatches:
        images, labels = self.splits[split]
        rank, world_size, device = 0, 1, torch.device("cpu")
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
            device = self.trainer.strategy.root_device
        # On a GPU the whole split moves once; batches are then cut on the device.
        images, labels = images.to(device), labels.to(device)
        order = EpochOrder(len(labels), shuffle, self.shuffle_seed, rank, world_size)
        return TensorBatches(images, labels, batch_size, order)

    def train_dataloader(self) -> TensorBatches:
        # Lightning's `overfit_batches` trains on the same batches every epoch: it turns a DataLoader's
        # shuffling off, and this loader's with it.
        # `overfit_batches` is set by Trainer.__init__, not declared on the class.
        overfitting = self.trainer is not None and bool(self.trainer.overfit_batches)  # type: ignore[attr-defined]
        return self._batches("train", self.batch_size, shuffle=not overfitting)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size)


class MNISTDataModule(TensorDataModule):
    """MNIST: a seeded validation split off the 60k training images; the official 10k images for test.

    With `folds` (K-fold cross-validation), fold `fold` of K folds of the 60k training images, stratified by
    label and drawn from `split_seed`, validates instead, and the other K - 1 folds train (`val_size` is
    not used); the test split is the same 10k images.

    Images are float32 in [0, 1], flattened to 784 values, the scale the classic tutorial trains on
    (`transforms.ToTensor()` and nothing else): images as read. Whatever the model does to them first
    (deskewing, `model.deskew=true`) is the model's, so that a checkpoint classifies images by itself.

    `transform`: the model's input transform, applied once to the training and validation splits
    (`TensorDataModule`).
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        download: bool = True,
        transform: torch.nn.Module | None = None,
        folds: int | None = None,
        fold: int | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, shuffle_seed, transform)
        check_whole("val_size", val_size, why=" (the validation split picks the best checkpoint)")
        check_whole("split_seed", split_seed, minimum=0)
        _check_folds(folds, fold)
        self.save_hyperparameters(ignore=["transform"], logger=False)
        self.data_dir = Path(data_dir)
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download
        # What the model is built for (docs/your_data.md): the images go out flat, so their shape is said.
        self.class_names = [str(digit) for digit in range(10)]
        self.input_shape = (1, 28, 28)
        self.folds = folds
        self.fold = fold
        self._verified = False  # the files checked by `prepare_data` in this process

    @property
    def raw_dir(self) -> Path:
        return self.data_dir / "MNIST" / "raw"

    def prepare_data(self) -> None:
        """Check the four `.gz` files against torchvision's MD5 sums; have torchvision extract them once.

        Once per data module: the run asks first, to size the model for the data
        (`core/data_contract.describe_data`), and Lightning asks again when the fit starts; the second check
        would hash the 12 MB again (about 20 ms).
        """
        if self._verified:
            return
        # Verified and extracted already: nothing to write, so a read-only data directory works too.
        if not self._check_archives() and self._extractions_match_stamp(warn=False):
            self._verified = True
            return
        try:
            self.raw_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(self.raw_dir / ".lock")
            lock.acquire()
        except OSError as error:
            raise DataError(
                f"{self.raw_dir} needs extracting, but it cannot be written ({error.strerror}): "
                "point paths.data_dir at a writable copy of the data directory."
            ) from None
        # Parallel sweep jobs share data/: one process checks and extracts while the others wait.
        try:
            missing = self._check_archives()
            if missing and not self.download:
                raise DataError(f"{', '.join(missing)} missing from {self.raw_dir}: {RESTORE_HINT}.")
            if missing or not self._extractions_match_stamp():
                self._drop_extractions()
            try:
                MNIST(str(self.data_dir), train=True, download=True)
            except (OSError, RuntimeError) as error:  # urllib's URLError is an OSError
                reason = " ".join(line.strip() for line in str(error).splitlines()[-2:])
                raise DataError(
                    f"MNIST is not in {self.raw_dir} (missing: {', '.join(missing)}) and the download failed "
                    f"({reason}). Run from the project directory, point paths.data_dir at a directory "
                    f"holding MNIST/raw, or {RESTORE_HINT}."
                ) from None
            self._write_stamp()
            self._verified = True
        finally:
            lock.release()

    def checksums(self) -> dict[str, str]:
        """The MD5 sums of the files the splits are read from, by their path under `data_dir`: the sums
        `prepare_data` checks every file against on every run, so recording them reads nothing again."""
        return {f"MNIST/raw/{filename}": md5 for filename, md5 in MNIST.resources}

    def _check_archives(self) -> list[str]:
        """The `.gz` files that are missing; a present one with the wrong MD5 sum is an error."""
        missing = []
        for filename, md5 in MNIST.resources:
            path = self.raw_dir / filename
            if not path.exists():
                missing.append(filename)
            elif not check_integrity(str(path), md5):
                raise DataError(
                    f"{path} is corrupt (its MD5 sum is not {md5}): {RESTORE_HINT}, "
                    "or delete it to download it again."
                )
        return missing

    # torchvision trusts any extracted file it finds. Each extraction is stamped with the MD5 of its verified
    # .gz and its size and modification time, so that a file cut short by a killed run, edited, or copied over
    # (another data set's files have the same names and sizes) is extracted again. Hashing the extracted
    # files on every run instead would cost more than the check is worth (docs/reliability.md).
    @property
    def _stamp_path(self) -> Path:
        return self.raw_dir / ".extracted.json"

    def _extraction_stamp(self) -> dict[str, list]:
        stamp = {}
        for filename, md5 in MNIST.resources:
            extracted = self.raw_dir / filename.removesuffix(".gz")
            if extracted.exists():
                stat = extracted.stat()
                stamp[extracted.name] = [md5, stat.st_size, stat.st_mtime_ns]
        return stamp

    def _extractions_match_stamp(self, warn: bool = True) -> bool:
        try:
            recorded = json.loads(self._stamp_path.read_text())
        except (OSError, ValueError):
            return False
        current = self._extraction_stamp()
        changed = [name for name in current if recorded.get(name) != current[name]]
        if changed and warn:
            log.warning("%s changed since it was extracted; extracting it again", self.raw_dir / changed[0])
        return not changed and len(current) == len(MNIST.resources)

    def _drop_extractions(self) -> None:
        self._stamp_path.unlink(missing_ok=True)
        for filename, _ in MNIST.resources:
            (self.raw_dir / filename.removesuffix(".gz")).unlink(missing_ok=True)

    def _write_stamp(self) -> None:
        write_json(self._stamp_path, self._extraction_stamp())

    def setup(self, stage: str | None = None) -> None:
        """Read the splits that `stage` uses (all three without one), each once: testing a checkpoint
        does not read the 60,000 training images."""
        if stage in (None, "fit", "validate") and "train" not in self.splits:
            train = MNIST(str(self.data_dir), train=True)
            if self.folds is not None:
                assert self.fold is not None  # `_check_folds` refused folds without the fold that validates
                train_idx, val_idx = fold_split(train.targets, self.folds, self.fold, self.split_seed)
            else:
                if self.val_size >= len(train.targets):
                    raise UserError(
                        f"data.val_size={self.val_size} leaves no training data: "
                        f"it must be below the {len(train.targets)} training images."
                    )
                generator = torch.Generator().manual_seed(self.split_seed)
                order = torch.randperm(len(train.targets), generator=generator)
                val_idx, train_idx = order[: self.val_size], order[self.val_size :]
            # Split the uint8 images before converting them: no float copy of all 60k exists at any time.
            images, labels = self._as_tensors(train.data[train_idx], train.targets[train_idx])
            self.splits["train"] = self._transformed(images), labels
            images, labels = self._as_tensors(train.data[val_idx], train.targets[val_idx])
            self.splits["val"] = self._transformed(images), labels
        if stage in (None, "test", "predict") and "test" not in self.splits:
            test = MNIST(str(self.data_dir), train=False)
            self.splits["test"] = self._as_tensors(test.data, test.targets)

    def _as_tensors(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images `N x 28 x 28` as float32 `N x 784` in [0, 1], the scale of `transforms.ToTensor()`."""
        return images.reshape(len(images), -1).float().div_(255.0), labels.long()


def _check_folds(folds: int | None, fold: int | None) -> None:
    """K-fold cross-validation needs both keys: K >= 2 folds and which one validates, from 0 to K - 1."""
    if folds is None:
        if fold is not None:
            raise UserError(f"data.fold={fold!r} needs data.folds: give the number of folds, data.folds=5.")
        return
    check_whole("folds", folds, minimum=2, why=" (folds of the training images, one of which validates)")
    if fold is None:
        raise UserError(
            f"data.folds={folds} needs data.fold, the fold that validates: 0 to {folds - 1} "
            f"(all of them: -m 'data.fold=range({folds})')."
        )
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
        raise UserError(
            f"data.fold={fold!r} is invalid: it must be from 0 to {folds - 1} (data.folds={folds})."
        )


def check_whole(name: str, value: object, minimum: int = 1, why: str = "") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"data.{name}={value!r} is invalid: it must be a whole number >= {minimum}{why}.")
