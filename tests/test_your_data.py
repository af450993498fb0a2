"""Bring your own data (docs/your_data.md): a data module written the way Lightning's docs write one, with
nothing from this project, goes through train.py, eval.py, export.py and predict.py as the page shows them.

`ColourImages` below is the data module: 3 x 32 x 32 images of three classes, each class brighter in its own
colour channel, as `TensorDataset`s. The test gives it to the entry points as `data=my_images`, a config
file in a config directory of its own (`hydra.searchpath`), and runs the commands of docs/your_data.md's
worked example in fresh processes. To run the same commands against your own data, name its
`conf/data/<yours>.yaml`: `YOUR_DATA=<yours> pytest tests/test_your_data.py`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
YOUR_DATA = os.environ.get("YOUR_DATA")  # a conf/data/<name>.yaml of your own, instead of ColourImages
PAGE = ROOT / "docs" / "your_data.md"
# Only what keeps the test quick: one short epoch, no progress bar, and a learning rate that gets there.
QUICK = ["trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]


class ColourImages(L.LightningDataModule):
    """Random 3 x 32 x 32 images in three classes: class c's images are brighter in channel c."""

    def __init__(self, batch_size: int = 16, images_per_split: int = 48) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.images_per_split = images_per_split
        self.class_names = ["red", "green", "blue"]

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self.images(seed=0)
        self.val_set = self.images(seed=1)
        self.test_set = self.images(seed=2)

    def images(self, seed: int) -> TensorDataset:
        generator = torch.Generator().manual_seed(seed)
        labels = torch.arange(self.images_per_split) % 3
        images = torch.rand(self.images_per_split, 3, 32, 32, generator=generator) * 0.5
        images[torch.arange(self.images_per_split), labels] += 0.5  # floats in [0, 1]
        return TensorDataset(images, labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.batch_size)


def worked_example() -> list[str]:
    """The commands of docs/your_data.md's worked example (its ```sh block after "Run it")."""
    text = PAGE.read_text()
    block = re.search(r"## Run it.*?```sh\n(.*?)```", text, flags=re.S)
    assert block, f"{PAGE} has no ```sh block under '## Run it'"
    lines = block.group(1).splitlines()
    return [line.split(" # ")[0].strip() for line in lines if line.startswith("python ")]


def run(command: str, extra: list[str], cwd: Path) -> subprocess.CompletedProcess:
    words = shlex.split(command)
    result = subprocess.run(
        [sys.executable, str(ROOT / words[1]), *words[2:], *extra],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The page's commands run one after the other, as a user would, in a directory of their own."""
    work = tmp_path_factory.mktemp("your_data")
    extra = []
    data = YOUR_DATA or "my_images"
    if YOUR_DATA is None:  # the page's conf/data/my_images.yaml, in a config directory beside the project's
        (work / "conf" / "data").mkdir(parents=True)
        (work / "conf" / "data" / "my_images.yaml").write_text(
            "_target_: test_your_data.ColourImages\nbatch_size: 16\n"
        )
        extra = [f"hydra.searchpath=[file://{work / 'conf'}]"]
    photos = work / "my_photos"
    photos.mkdir()
    for name, colour in {"red": (230, 40, 40), "green": (40, 230, 40), "blue": (40, 40, 230)}.items():
        Image.fromarray(np.full((40, 48, 3), colour, dtype=np.uint8)).save(photos / f"{name}.png")
    found = {}
    for command in worked_example():
        script = command.split()[1]
        command = command.replace("data=my_images", f"data={data}")
        command = command.replace("$RUN", str(found.get("train", work)))
        out = work / "logs" / script.removesuffix(".py")
        speed = {"train.py": [*QUICK, "optimizer.lr=0.05"], "eval.py": QUICK}.get(script, [])
        run(command, [*(extra if "data=" in command else []), *speed, f"hydra.run.dir={out}"], work)
        found[script.removesuffix(".py")] = out
    return found


@pytest.mark.slow
def test_the_worked_example_trains_evaluates_exports_and_predicts(example: dict[str, Path]) -> None:
    assert set(example) == {"train", "eval", "export", "predict"}
    checkpoint = torch.load(example["train"] / "checkpoints" / "best.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    names = hparams["class_names"]
    if YOUR_DATA is None:
        assert hparams["input_shape"] == [3, 32, 32] and names == ["red", "green", "blue"]
        assert hparams["net"] == {"_target_": "torch.nn.Linear", "in_features": 3072, "out_features": 3}

    for run_dir in (example["train"], example["eval"]):
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert {f"test/class_acc/{name}" for name in names} <= set(metrics)
        figures = {p.name for p in (run_dir / "figures").iterdir()}
        assert {"weight_templates.png", "confusion_matrix.png", "confident_mistakes.png"} <= figures
        if YOUR_DATA is None:
            assert metrics["test/acc"] == 1.0  # one channel brighter by half the range: separable
    trained = json.loads((example["train"] / "metrics.json").read_text())
    evaluated = json.loads((example["eval"] / "metrics.json").read_text())
    assert evaluated["test/acc"] == trained["test/acc"]

    model = onnx.load(str(example["export"] / "model.onnx"))
    (graph_input,) = model.graph.input
    dims = [d.dim_value or d.dim_param for d in graph_input.type.tensor_type.shape.dim]
    assert dims[1:] == hparams["input_shape"] and isinstance(dims[0], str)  # any batch size
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["class_names"]) == names

    with open(example["predict"] / "predictions.csv", newline="") as f:
        rows = {Path(row["path"]).stem: row for row in csv.DictReader(f)}
    assert len(rows) == 3 and all(row["class_name"] == names[int(row["prediction"])] for row in rows.values())
    if YOUR_DATA is None:
        assert {stem: row["class_name"] for stem, row in rows.items()} == {c: c for c in names}
        with Image.open(example["predict"] / rows["red"]["input"]) as seen:  # resized to the model's input
            assert (seen.mode, seen.size) == ("RGB", (32, 32))
