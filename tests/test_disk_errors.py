"""A write that fails (a full disk, a directory that cannot be written) ends the run in one line, exit status
2, and leaves no file that looks finished: checkpoints, figures and metrics.json are whole or absent."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.training import train

TINY = ("data.val_size=100", "trainer.max_epochs=1", "trainer.accelerator=cpu", "callbacks.progress_bar=null")


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def run(compose_train, tiny_mnist: Path, caplog: pytest.LogCaptureFixture) -> str:
    cfg = compose_train(f"paths.data_dir={tiny_mnist}", *TINY)
    with pytest.raises(SystemExit) as stopped:
        report_user_errors(train)(cfg)
    assert stopped.value.code == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    return errors[0]


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_write(
    compose_train, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setattr(torch, "save", full_disk)
    message = run(compose_train, tiny_mnist, caplog)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert message.startswith(f"Cannot write {checkpoints}/") and ".ckpt: No space left on device." in message
    assert "free space there, or point hydra.run.dir" in message
    assert list(checkpoints.iterdir()) == []  # no checkpoint, whole or partial, and no temporary file
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_a_full_disk_while_drawing_the_figures(
    compose_train, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    written = []
    real_save = Image.Image.save

    def save_one_then_fail(image, fp, *args, **kwargs):
        if not isinstance(fp, (str, Path)):  # TensorBoard's in-memory PNG
            return real_save(image, fp, *args, **kwargs)
        if written:
            full_disk()
        real_save(image, fp, *args, **kwargs)
        written.append(fp)

    monkeypatch.setattr(Image.Image, "save", save_one_then_fail)
    message = run(compose_train, tiny_mnist, caplog)
    figures = tmp_path / "run" / "figures"
    assert message.startswith(f"Cannot write {figures}/") and "No space left on device" in message
    # The figure written before the disk filled up, whole, and nothing else: no partial file or temporary.
    assert [p.name for p in figures.iterdir()] == ["weight_templates.png"]
    assert Image.open(figures / "weight_templates.png").size == (1000, 440)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_an_unwritable_run_directory_names_the_fix(
    compose_train, tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(torch, "save", read_only)
    message = run(compose_train, tiny_mnist, caplog)
    assert "Read-only file system. The run stopped without metrics.json; point hydra.run.dir at a" in message
