"""A folder of labelled images, one subfolder per class (`DIR/cat/1.png`, `DIR/dog/2.jpg`), the layout that
torchvision's `ImageFolder` reads, decoded once and held in memory as tensors like MNIST.

`DIR/train` and `DIR/test` (and `DIR/val`, if there is one), each holding the class subfolders, are the
splits when they exist; otherwise `DIR` itself is split, stratified by class. Images are decoded in `setup()`
and never again: an epoch is index operations on tensors (`TensorDataModule`), as for MNIST.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from mnist_logreg.core.data import TensorDataModule, check_whole
from mnist_logreg.core.splits import stratified_fractions
from mnist_logreg.errors import UserError, one_line

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# The splits each `setup` stage reads; a stage not here, or None, reads them all.
STAGE_SPLITS: dict[str | None, set[str]] = {
    "fit": {"train", "val"},
    "validate": {"val"},
    "test": {"test"},
    "predict": {"test"},
}
Samples = list[tuple[str, int]]  # (image path, label), as torchvision's `make_dataset` lists them


class ImageFolderDataModule(TensorDataModule):
    """The images under `root`, as float32 `N x C x H x W` in [0, 1] and int64 labels, one per class folder.

    Class names are the folder names, sorted (label `i` is `class_names[i]`, as in `ImageFolder`). Without
    split folders, each class is shuffled with `split_seed` and `val_fraction` and `test_fraction` of its
    images (rounded) go to validation and test, so every split has the classes in the folder's proportions.
    With `DIR/train` and `DIR/test` but no `DIR/val`, the validation split is taken from `DIR/train` the same
    way. `resize: [H, W]` brings every image to one size (bilinear, aspect ratio not kept); `grayscale`
    reads one channel instead of three (RGB). A relative `root` is relative to `base_dir` (`paths.root_dir`,
    the launch directory: Hydra does not change the working directory).

    `transform`: the model's input transform, applied once to the training and validation splits
    (`TensorDataModule`).
    """

    def __init__(
        self,
        root: str,
        base_dir: str = ".",
        resize: list[int] | None = None,
        grayscale: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        shuffle_seed: int = 0,
        transform: torch.nn.Module | None = None,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, shuffle_seed, transform)
        check_fraction("val_fraction", val_fraction, why=" (the validation split picks the best checkpoint)")
        check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1:
            raise UserError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} leave no training "
                "images: their sum must be below 1."
            )
        check_whole("split_seed", split_seed, minimum=0)
        if resize is not None:
            if not is_size(resize):
                raise UserError(f"data.resize={resize} is invalid: it must be [height, width] in pixels.")
            resize = list(resize)  # a plain list, not Hydra's ListConfig, in the checkpoint's hyperparameters
        self.save_hyperparameters(ignore=["transform"], logger=False)
        self.root = Path(base_dir) / Path(root).expanduser()
        self.resize = resize
        self.grayscale = grayscale
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed
        self._first_image: tuple[str, tuple[int, int]] | None = None  # path, (H, W): all must match it

    def setup(self, stage: str | None = None) -> None:
        """Decode the splits that `stage` uses (all three without one), each once."""
        needed = STAGE_SPLITS.get(stage, set(SPLITS)) - set(self.splits)
        if not needed:
            return
        samples = self.list_splits()
        for split in SPLITS:
            if split in needed:
                images, labels = self._decode(samples[split])
                self.splits[split] = (images if split == "test" else self._transformed(images)), labels
                _, channels, height, width = images.shape  # N x C x H x W, as decoded
                self.input_shape = (channels, height, width)
        counts = ", ".join(f"{split} {len(self.splits[split][1])}" for split in SPLITS if split in needed)
        # `list_splits` named the classes, and each split decoded set the shape.
        assert self.class_names is not None and self.input_shape is not None
        log.info(
            "%s: %s images of %d classes, %s",
            self.root,
            counts,
            len(self.class_names),
            " x ".join(map(str, self.input_shape)),
        )

    def list_splits(self) -> dict[str, Samples]:
        """Each split's (path, label) pairs, from the split folders or a stratified split of `root`;
        sets `class_names`. Nothing is decoded."""
        if not self.root.is_dir():
            raise UserError(
                f"data.root={self.root} is not a folder: give a folder holding one subfolder of images "
                "per class."
            )
        present = sorted(name for name in SPLITS if (self.root / name).is_dir())
        if not present:
            self.class_names, samples = list_classes(self.root)
            return stratified(samples, self.fractions, self.split_seed, self.root)
        if not {"train", "test"} <= set(present):
            missing = " and ".join(f"{name}/" for name in ("train", "test") if name not in present)
            raise UserError(
                f"data.root={self.root} has {', '.join(f'{p}/' for p in present)} but no {missing}: split "
                "folders need train/ and test/ (val/ is optional), each with the same class subfolders."
            )
        listed = {split: list_classes(self.root / split) for split in present}
        self.class_names = listed["train"][0]
        for split in present:
            check_same_classes(self.root, self.class_names, split, listed[split][0])
        splits = {split: samples for split, (_, samples) in listed.items()}
        if "val" not in splits:
            val_only = {"val": self.fractions["val"]}
            splits.update(stratified(splits["train"], val_only, self.split_seed, self.root / "train"))
        return splits

    def _decode(self, samples: Samples) -> tuple[torch.Tensor, torch.Tensor]:
        """The images as float32 `N x C x H x W` in [0, 1] (uint8 / 255, as `transforms.ToTensor()`)."""
        mode = "L" if self.grayscale else "RGB"
        pixels = []
        for path, _ in samples:
            try:
                with Image.open(path) as file:
                    image = file.convert(mode)  # decodes the whole file: a truncated one fails here
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                raise UserError(
                    f"{path} cannot be read as an image ({one_line(error)}): replace or remove it."
                ) from None
            if self.resize is not None:
                height, width = self.resize
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            self._check_size(path, (image.height, image.width))
            pixels.append(np.asarray(image))
        images = torch.from_numpy(np.stack(pixels))  # N x H x W (grayscale) or N x H x W x C
        images = images.unsqueeze(1) if self.grayscale else images.permute(0, 3, 1, 2)
        labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        return images.contiguous().float().div_(255.0), labels

    def _check_size(self, path: str, size: tuple[int, int]) -> None:
        if self._first_image is None:
            self._first_image = path, size
        first_path, first_size = self._first_image
        if size != first_size:
            raise UserError(
                f"{path} is {size[0]}x{size[1]} pixels but {first_path} is {first_size[0]}x{first_size[1]} "
                "(height x width): set data.resize=[H,W] to bring every image to one size."
            )


def list_classes(directory: Path) -> tuple[list[str], Samples]:
    """The class folders in `directory` (sorted) and their images, as `ImageFolder` lists them."""
    try:
        classes, class_to_idx = find_classes(directory)
    except FileNotFoundError:
        raise UserError(
            f"{directory} has no class subfolders: put each class's images in a folder named for the class "
            f"({directory}/<class>/<image>.png)."
        ) from None
    if len(classes) == 1:
        raise UserError(f"{directory} has one class folder ({classes[0]}/): a classifier needs two or more.")
    samples = make_dataset(directory, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = Counter(label for _, label in samples)
    empty = [name for name in classes if counts[class_to_idx[name]] == 0]
    if empty:
        raise UserError(
            f"{directory / empty[0]} has no images ({' '.join(IMG_EXTENSIONS)}): add some or remove "
            "the folder."
        )
    return classes, samples


def check_same_classes(root: Path, classes: list[str], split: str, found: list[str]) -> None:
    if found != classes:
        only_train, only_here = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        differences = [f"only in train/: {', '.join(only_train)}"] if only_train else []
        differences += [f"only in {split}/: {', '.join(only_here)}"] if only_here else []
        raise UserError(
            f"data.root={root}: {split}/ and train/ have different class folders ({'; '.join(differences)}): "
            "every split needs the same classes."
        )


def stratified(samples: Samples, fractions: dict[str, float], seed: int, root: Path) -> dict[str, Samples]:
    """`samples` split by class: of each class, shuffled with `seed`, `fraction` (rounded) of its images go
    to each split named in `fractions`, the rest to train. Each split keeps the listing's order."""
    labels = torch.tensor([label for _, label in samples])
    picked = stratified_fractions(labels, fractions, seed)
    for split, indices in picked.items():
        if not len(indices):
            key = (
                f"data.{split}_fraction"
                if split in fractions
                else " + ".join(f"data.{s}_fraction" for s in fractions)
            )
            raise UserError(
                f"{root} has too few images ({len(samples)}) for a {split} split ({key}): add images or "
                "change the fractions."
            )
    return {split: [samples[i] for i in indices.tolist()] for split, indices in picked.items()}


def is_size(value: object) -> bool:
    """Two whole numbers >= 1 (no bool, no float)."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        return False
    return all(type(v) is int and v >= 1 for v in value)


def check_fraction(name: str, value: object, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise UserError(f"data.{name}={value!r} is invalid: it must be a number between 0 and 1{why}.")
