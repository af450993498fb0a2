"""`data=image_folder`: folders of class subfolders of PNGs made here; splits, shapes, refusals, a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from helpers import ROOT, run_script
from mnist_logreg.core.deskew import Deskew
from mnist_logreg.core.image_folder import ImageFolderDataModule
from mnist_logreg.errors import UserError
from mnist_logreg.runs.config import ConfigError, build, check_config, check_options

# Folder names sort as listed; each colour is bright in grayscale too (ITU-R 601 luma 100, 183, 132).
COLOURS = {"blue": (80, 80, 255), "green": (80, 255, 80), "red": (255, 80, 80)}


def write_images(folder: Path, per_class: int = 12, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    """`per_class` RGB PNGs (height x width `size`) in one folder per class: noise, and a band of the class's
    colour in a place of its own, so that any classifier separates them (in grayscale too)."""
    rng = np.random.default_rng(seed)
    height, width = size
    for index, (name, colour) in enumerate(COLOURS.items()):
        (folder / name).mkdir(parents=True)
        for number in range(per_class):
            pixels = rng.integers(0, 30, (height, width, 3), dtype=np.uint8)
            band = slice(index * width // 3, (index + 1) * width // 3)
            pixels[:, band] = colour
            Image.fromarray(pixels).save(folder / name / f"{number:03d}.png")
    return folder


def names(samples: list[tuple[str, int]]) -> list[str]:
    return [Path(path).relative_to(Path(path).parents[2]).as_posix() for path, _ in samples]


def test_a_folder_is_split_by_class_in_its_proportions(tmp_path: Path) -> None:
    root = write_images(tmp_path / "images")
    splits = ImageFolderDataModule(str(root), val_fraction=0.1, test_fraction=0.2).list_splits()
    # Of each class's 12 images: round(1.2) = 1 for validation, round(2.4) = 2 for test, 9 for training.
    for split, count in {"train": 9, "val": 1, "test": 2}.items():
        labels = [label for _, label in splits[split]]
        assert [labels.count(label) for label in range(3)] == [count] * 3, split
    paths = [path for split in splits.values() for path, _ in split]
    assert len(paths) == len(set(paths)) == 36  # disjoint, and every image in one split


def test_the_split_follows_its_own_seed(tmp_path: Path) -> None:
    root = write_images(tmp_path / "images")

    def test_split(**kwargs) -> list[str]:
        return names(ImageFolderDataModule(str(root), **kwargs).list_splits()["test"])

    assert test_split(split_seed=0) == test_split(split_seed=0, shuffle_seed=5)
    assert test_split(split_seed=0) != test_split(split_seed=1)


def test_split_folders_are_the_splits(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_images(root / "train", per_class=10, seed=1)
    write_images(root / "test", per_class=4, seed=2)
    splits = ImageFolderDataModule(str(root), val_fraction=0.2).list_splits()
    assert names(splits["test"]) == [f"test/{c}/{n:03d}.png" for c in COLOURS for n in range(4)]
    # No val/: two of each class's ten training images validate.
    assert len(splits["val"]) == 6 and len(splits["train"]) == 24
    assert all(Path(path).parts[-3] == "train" for path, _ in splits["train"] + splits["val"])

    write_images(root / "val", per_class=3, seed=3)
    splits = ImageFolderDataModule(str(root)).list_splits()
    assert {len(s) for s in splits.values()} == {30, 9, 12}
    assert all(Path(path).parts[-3] == "val" for path, _ in splits["val"])


def test_images_are_tensors_with_the_class_names_of_the_folders(tmp_path: Path) -> None:
    root = write_images(tmp_path / "images")
    dm = ImageFolderDataModule(str(root))
    dm.setup()
    images, labels = dm.splits["train"]
    assert dm.class_names == ["blue", "green", "red"] and dm.input_shape == (3, 32, 32)
    assert images.shape == (27, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    path, label = dm.list_splits()["train"][0]
    expected = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255
    assert torch.equal(images[0], expected) and labels[0] == label
    batch, batch_labels = next(iter(dm.test_dataloader()))
    assert batch.shape == (6, 3, 32, 32) and batch_labels.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("options", "shape"),
    [
        ({"resize": [28, 20]}, (3, 28, 20)),
        ({"grayscale": True}, (1, 32, 32)),
        ({"grayscale": True, "resize": [28, 28]}, (1, 28, 28)),
    ],
)
def test_resize_and_grayscale(tmp_path: Path, options: dict, shape: tuple[int, int, int]) -> None:
    dm = ImageFolderDataModule(str(write_images(tmp_path / "images")), **options)
    dm.setup("test")
    assert dm.input_shape == shape and dm.splits["test"][0].shape == (6, *shape)
    assert float(dm.splits["test"][0].min()) >= 0.0 and float(dm.splits["test"][0].max()) <= 1.0


def test_the_models_transform_is_applied_once_to_the_fit_splits(tmp_path: Path) -> None:
    root = write_images(tmp_path / "images")
    plain = ImageFolderDataModule(str(root), grayscale=True, resize=[28, 28])
    deskewed = ImageFolderDataModule(str(root), grayscale=True, resize=[28, 28], transform=Deskew())
    plain.setup()
    deskewed.setup()
    for split in ("train", "val"):
        assert torch.allclose(deskewed.splits[split][0], Deskew()(plain.splits[split][0]))
        assert not torch.allclose(deskewed.splits[split][0], plain.splits[split][0])  # it moved them
    assert torch.equal(deskewed.splits["test"][0], plain.splits["test"][0])  # the tested model deskews it


def test_each_stage_decodes_only_its_splits(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_images(root / "train")
    write_images(root / "test", per_class=2)
    broken = root / "train" / "red" / "broken.png"
    broken.write_bytes(b"not a png")
    dm = ImageFolderDataModule(str(root))
    dm.setup("test")  # eval.py, export.py: the training images are not read
    assert set(dm.splits) == {"test"}
    with pytest.raises(
        UserError, match=rf"^{broken} cannot be read as an image \(.*\): replace or remove it\.$"
    ):
        dm.setup("fit")


def refusal(tmp_path: Path, case: str) -> ImageFolderDataModule:
    root = tmp_path / "images"
    if case == "missing":
        return ImageFolderDataModule(str(root))
    root.mkdir()
    if case == "one class":
        (root / "cat").mkdir()
        Image.new("RGB", (8, 8)).save(root / "cat" / "1.png")
    elif case == "empty class":
        write_images(root)
        (root / "dog").mkdir()
    elif case == "mixed sizes":
        write_images(root)
        Image.new("RGB", (40, 30)).save(root / "red" / "big.png")
    elif case == "different classes":
        write_images(root / "train")
        write_images(root / "test")
        (root / "test" / "red").rename(root / "test" / "pink")
    elif case == "no test folder":
        write_images(root / "train")
    return ImageFolderDataModule(str(root))


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", r"data.root=\S+/images is not a folder: give a folder holding one subfolder of images"),
        (
            "empty",
            r"\S+/images has no class subfolders: put each class's images in a folder named for the cla",
        ),
        ("one class", r"\S+/images has one class folder \(cat/\): a classifier needs two or more\.$"),
        (
            "empty class",
            r"\S+/images/dog has no images \(.jpg .jpeg .png .*\): add some or remove the folder",
        ),
        (
            "mixed sizes",
            r"\S+/red/big.png is 30x40 pixels but \S+/blue/\d+.png is 32x32 \(height x width\): ",
        ),
        (
            "different classes",
            r"test/ and train/ have different class folders \(only in train/: red; only in test/: pink\)",
        ),
        ("no test folder", r"data.root=\S+ has train/ but no test/: split folders need train/ and test/"),
    ],
)
def test_a_folder_that_cannot_work_is_refused_in_one_line(tmp_path: Path, case: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as raised:
        refusal(tmp_path, case).setup()
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_fraction": 0}, r"data.val_fraction=0 is invalid: it must be a number between 0 and 1 \(the"),
        ({"test_fraction": 1.5}, r"data.test_fraction=1.5 is invalid"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, r"leave no training images: their sum must be below 1"),
        ({"resize": [28]}, r"data.resize=\[28\] is invalid: it must be \[height, width\] in pixels"),
        ({"resize": [28.0, 28]}, r"data.resize=\[28.0, 28\] is invalid"),
        ({"batch_size": 0}, r"data.batch_size=0 is invalid: it must be a whole number >= 1"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ImageFolderDataModule("images", **options)


def test_too_few_images_for_a_split_is_refused(tmp_path: Path) -> None:
    dm = ImageFolderDataModule(str(write_images(tmp_path / "images", per_class=2)), val_fraction=0.1)
    with pytest.raises(UserError, match=r"has too few images \(6\) for a val split \(data.val_fraction\)"):
        dm.setup()


def test_the_config_group_builds_it_relative_to_the_launch_directory(compose_train) -> None:
    cfg = compose_train("data=image_folder", "data.root=my_images", "data.resize=[28,28]")
    check_config(cfg)
    dm = build("data", cfg.data)
    assert isinstance(dm, ImageFolderDataModule) and dm.root == ROOT / "my_images"
    assert dm.resize == [28, 28] and type(dm.hparams.resize) is list  # a plain list in checkpoints
    assert ImageFolderDataModule("/abs/images", base_dir=str(ROOT)).root == Path("/abs/images")
    # Its options are checked like every part's: by its signature and its type hints.
    for change, message in [
        ({"root": "???"}, r"^data.root has no value: give one on the command line, data.root=\.\.\.$"),
        ({"resize": 28}, r"^data.resize=28 is invalid: .* takes a list or null there\.$"),
        ({"grayscal": True}, r"^data.grayscal=True is not an option of .*: did you mean data.grayscale\?$"),
    ]:
        node = cfg.data.copy()
        with open_dict(node):
            node.update(change)
        with pytest.raises(ConfigError, match=message):
            check_options("data", node)


@pytest.mark.slow
def test_train_py_learns_a_folder_of_images(tmp_path: Path) -> None:
    root = write_images(tmp_path / "images", per_class=20)
    out = tmp_path / "run"
    # 1 x 28 x 28: the size the default model is built for.
    result = run_script(
        "train.py",
        "data=image_folder",
        f"data.root={root}",
        "data.grayscale=true",
        "data.resize=[28,28]",
        "data.batch_size=8",
        "optimizer.lr=0.1",
        "trainer.max_epochs=1",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["test/acc"] > 0.8 and metrics["val/acc"] > 0.8, metrics  # chance is 1/3
    assert "images: train 42, val 6" in result.stdout + result.stderr
