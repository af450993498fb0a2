"""eval.py, predict.py and export.py on a checkpoint trained briefly on the real MNIST."""

from __future__ import annotations

import copy
import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from helpers import ROOT, run_script
from mnist_logreg.core.checkpoints import CheckpointError, load_model
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.errors import UserError
from mnist_logreg.inference import export as onnx_export
from mnist_logreg.inference.export import ExportError, export, require
from mnist_logreg.inference.predict import predict
from mnist_logreg.runs.evaluation import evaluate

QUIET = "callbacks.progress_bar.refresh_rate=0"


@pytest.fixture(scope="module")
def best(trained_run: Path) -> Path:
    return trained_run / "checkpoints" / "best.ckpt"


# Checkpoint loading (shared by the three entry points).


@pytest.mark.slow
def test_bad_checkpoints_are_named_with_the_fix(tmp_path: Path, best: Path) -> None:
    with pytest.raises(CheckpointError, match=r"missing\.ckpt does not exist: give .*/best\.ckpt"):
        load_model(tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_model(tmp_path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(best.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"is not a readable checkpoint \(truncated, or not a"):
        load_model(truncated)
    weights_only = tmp_path / "state_dict.pt"
    torch.save(torch.nn.Linear(784, 10).state_dict(), weights_only)
    with pytest.raises(
        CheckpointError,
        match=r"not a checkpoint written by train\.py \(it has no pytorch-lightning_version\)",
    ):
        load_model(weights_only)
    other = torch.load(best, weights_only=True)
    other["state_dict"]["net.weight"] = torch.zeros(5, 784)
    torch.save(other, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=r"does not fit.*size mismatch"):
        load_model(tmp_path / "other.ckpt")


# eval.py


@pytest.mark.slow
def test_eval_reproduces_the_training_runs_test_metrics(trained_run: Path, best: Path, compose_train) -> None:
    cfg = compose_train(f"ckpt_path={best}", QUIET, config_name="eval")
    evaluate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["test/acc"] == trained["test/acc"] and metrics["test/loss"] == trained["test/loss"]
    assert metrics["ckpt_path"] == trained["ckpt_path"] == str(best)
    assert (output_dir / "figures" / "confusion_matrix.png").is_file()


@pytest.mark.slow
def test_eval_reads_mnist_from_the_given_data_dir(
    trained_run: Path, best: Path, tmp_path: Path, compose_train
) -> None:
    moved = tmp_path / "elsewhere"  # as on another machine: the checkpoint's own data_dir is not used
    (moved / "MNIST" / "raw").mkdir(parents=True)
    for gz in (ROOT / "data" / "MNIST" / "raw").glob("*.gz"):
        (moved / "MNIST" / "raw" / gz.name).symlink_to(gz)
    metrics = evaluate(
        compose_train(f"ckpt_path={best}", f"paths.data_dir={moved}", QUIET, config_name="eval")
    )
    assert (moved / "MNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()  # extracted there, then read
    assert metrics["test/acc"] == json.loads((trained_run / "metrics.json").read_text())["test/acc"]


@pytest.mark.slow
def test_eval_with_an_unreadable_checkpoint_fails_in_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    result = run_script("eval.py", f"ckpt_path={bogus}", f"hydra.run.dir={tmp_path / 'out'}")
    assert result.returncode == 2
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert (
        len(errors) == 1 and "is not a readable checkpoint (truncated, or not a checkpoint file)" in errors[0]
    ), output
    assert "Traceback" not in output and not (tmp_path / "out" / "metrics.json").exists()


# predict.py


def render(pixels: np.ndarray, kind: str) -> Image.Image:
    digit = Image.fromarray(pixels)
    if kind == "photo":  # dark on white paper, enlarged, RGB
        page = Image.new("L", (240, 200), 255)
        page.paste(ImageOps.invert(digit.resize((112, 112), Image.Resampling.BICUBIC)), (70, 30))
        return page.convert("RGB")
    return ImageOps.expand(digit, 20)  # as MNIST, on a larger canvas


@pytest.fixture
def image_dir(tmp_path: Path, best: Path) -> tuple[Path, dict[str, int]]:
    """Renderings of five test digits the model gets right with confidence, plus two unusable files."""
    model = load_model(best)
    datamodule = MNISTDataModule()
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    with torch.no_grad():
        confidence, preds = model(images[:200]).softmax(1).max(1)
    chosen = ((preds == labels[:200]) & (confidence > 0.95)).nonzero().squeeze(1)[:5].tolist()
    folder = tmp_path / "digits"
    folder.mkdir()
    expected = {}
    for n, i in enumerate(chosen):
        pixels = (images[i].reshape(28, 28) * 255).round().byte().numpy()
        name = f"digit{n}.{'jpg' if n % 2 else 'png'}"
        render(pixels, "photo" if n % 2 else "mnist").save(folder / name, quality=90)
        expected[str(folder / name)] = int(labels[i])
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.png").write_bytes((folder / "digit0.png").read_bytes()[:60])
    return folder, expected


@pytest.mark.slow
def test_predict_labels_a_folder_and_reports_unreadable_files(
    best: Path, image_dir, compose_train, caplog: pytest.LogCaptureFixture
) -> None:
    folder, expected = image_dir
    cfg = compose_train(f"ckpt_path={best}", f"images={folder}", config_name="predict")
    with caplog.at_level(logging.INFO):
        predict(cfg)
    with open(Path(cfg.paths.output_dir) / "predictions.csv", newline="") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    assert len(expected) == 5 and len(rows) == 7
    for path, label in expected.items():
        assert int(rows[path]["prediction"]) == label and 0.5 < float(rows[path]["probability"]) <= 1
    assert "cannot be read as an image" in rows[str(folder / "notes.txt")]["error"]
    assert "cannot be read as an image" in rows[str(folder / "cut.png")]["error"]
    assert rows[str(folder / "cut.png")]["prediction"] == ""
    assert f"{folder / 'digit1.jpg'}  " in caplog.text and "2 of 7 files could not be labelled" in caplog.text


@pytest.mark.slow
def test_predict_takes_a_glob(best: Path, image_dir, compose_train) -> None:
    folder, expected = image_dir
    rows = predict(compose_train(f"ckpt_path={best}", f"images={folder}/*.jpg", config_name="predict"))
    assert {row.path: row.prediction for row in rows} == {
        p: y for p, y in expected.items() if p.endswith("jpg")
    }


@pytest.mark.slow
def test_predict_with_nothing_readable_exits_with_status_2(best: Path, image_dir, tmp_path: Path) -> None:
    folder, _ = image_dir
    out = tmp_path / "out"
    result = run_script("predict.py", f"ckpt_path={best}", f"images={folder}/*.txt", f"hydra.run.dir={out}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no file could be labelled" in result.stderr + result.stdout
    assert "notes.txt" in (out / "predictions.csv").read_text()  # the reason is recorded per file


@pytest.mark.slow
def test_predict_names_a_missing_images_path(best: Path, compose_train) -> None:
    with pytest.raises(UserError, match="no such file, folder, or matching files"):
        predict(compose_train(f"ckpt_path={best}", "images=no/such/*.png", config_name="predict"))


# export.py


@pytest.mark.slow
def test_export_writes_an_onnx_model_that_matches_pytorch(best: Path, compose_train) -> None:
    import onnxruntime

    cfg = compose_train(f"ckpt_path={best}", config_name="export")
    path = export(cfg)
    assert path == Path(cfg.paths.output_dir) / "model.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # one file, no leftovers
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (pixels,) = session.get_inputs()
    assert pixels.name == "pixels" and pixels.type == "tensor(float)" and pixels.shape[1:] == [1, 28, 28]
    model = load_model(best)
    for batch in (1, 7):  # the batch dimension is dynamic
        images = torch.rand(batch, 1, 28, 28)
        (logits,) = session.run(["logits"], {"pixels": images.numpy()})
        with torch.no_grad():
            np.testing.assert_allclose(logits, model(images).numpy(), atol=1e-5)


@pytest.mark.slow
def test_export_that_disagrees_with_pytorch_leaves_no_file(
    best: Path, compose_train, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_onnx = onnx_export.export_onnx

    def export_another_model(model, path: Path) -> None:  # as a faulty exporter would
        other = copy.deepcopy(model)
        other.net.bias.data[0] += 1.0
        export_onnx(other, path)

    monkeypatch.setattr(onnx_export, "export_onnx", export_another_model)
    cfg = compose_train(f"ckpt_path={best}", config_name="export")
    with pytest.raises(
        ExportError, match=r"disagrees with PyTorch .*[1-9]\d* predictions differ.*nothing written"
    ):
        export(cfg)
    assert list(Path(cfg.paths.output_dir).iterdir()) == []


def test_missing_export_dependencies_name_the_install_command() -> None:
    with pytest.raises(UserError, match=r'not installed: pip install -e "\.\[export\]"'):
        require("onnxruntime_that_is_not_installed")


@pytest.mark.slow
def test_export_of_a_model_with_nan_weights_fails(best: Path, compose_train, tmp_path: Path) -> None:
    checkpoint = torch.load(best, weights_only=True)
    checkpoint["state_dict"]["net.weight"][3, 100] = float("nan")
    broken = tmp_path / "nan.ckpt"
    torch.save(checkpoint, broken)
    cfg = compose_train(f"ckpt_path={broken}", config_name="export")
    with pytest.raises(ExportError, match=r"max logit difference nan"):
        export(cfg)
    assert list(Path(cfg.paths.output_dir).iterdir()) == []


@pytest.mark.slow
def test_eval_refuses_an_unknown_trainer_option_in_one_line(best: Path, compose_train) -> None:
    cfg = compose_train(f"ckpt_path={best}", "+trainer.max_epoch=3", config_name="eval")
    with pytest.raises(UserError, match=r"^trainer\.max_epoch=3 is not an option of .*did you mean"):
        evaluate(cfg)
