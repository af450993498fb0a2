"""The debug presets (`debug=<name>`), each one Lightning feature, and the untracked `conf/local/` group."""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir

from helpers import CONF_DIR
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.runs.training import train

TINY = ("data.val_size=100", "data.batch_size=50", "trainer.accelerator=cpu", "callbacks.progress_bar=null")


@pytest.mark.slow
def test_overfit_trains_on_the_same_batches_every_epoch(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train("debug=overfit", f"data.data_dir={tiny_mnist}", *TINY)
    assert cfg.trainer.overfit_batches == 10 and cfg.test is False and cfg.optimizer.lr == 0.5
    metrics = train(cfg)
    assert metrics["steps"] == 10 * 60 and "test/acc" not in metrics  # 10 batches, 60 epochs, no test
    # Lightning turns a DataLoader's shuffling off under `overfit_batches`; the data module's own loader too.
    datamodule = MNISTDataModule(data_dir=str(tiny_mnist), val_size=100, batch_size=50)
    datamodule.trainer = L.Trainer(overfit_batches=10, logger=False, accelerator="cpu")
    datamodule.setup("fit")
    assert datamodule.train_dataloader().sampler.shuffle is False


@pytest.mark.slow
def test_limit_runs_a_few_batches_of_every_stage(compose_train, tiny_mnist: Path) -> None:
    metrics = train(compose_train("debug=limit", f"data.data_dir={tiny_mnist}", *TINY))
    assert metrics["steps"] == 2 * 10  # 10 of the 10 training batches of 50 (500 images), 2 epochs
    assert 0.0 <= metrics["test/acc"] <= 1.0
    # A smoke test, recorded as one: never "completed", which means a result.
    assert metrics["status"] == "debug" and metrics["debug"] == "limit"


@pytest.mark.slow
def test_profiler_writes_lightnings_report_to_the_run_directory(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train("debug=profiler", f"data.data_dir={tiny_mnist}", *TINY, "trainer.max_epochs=1")
    train(cfg)
    report = (Path(cfg.paths.output_dir) / "fit-profile.txt").read_text()
    assert "run_training_batch" in report and "Total" in report


def test_a_machines_own_settings_in_conf_local_apply_last(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    # Without this machine's own conf/local/default.yaml, if it has one.
    shutil.copytree(CONF_DIR, conf, ignore=lambda d, _: ["default.yaml"] if Path(d).name == "local" else [])
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert compose("train").cpu_threads == 1  # none there: the group is optional
    (conf / "local" / "default.yaml").write_text("# @package _global_\ncpu_threads: 2\n")
    with initialize_config_dir(str(conf), version_base="1.3"):
        assert compose("train").cpu_threads == 2
        assert compose("train", overrides=["cpu_threads=3"]).cpu_threads == 3  # the command line wins

    ignored = (CONF_DIR.parent / ".gitignore").read_text().splitlines()
    assert "conf/local/*" in ignored and "!conf/local/README.md" in ignored  # untracked
