"""Every option of every config group composes, and the objects it names can be built."""

from __future__ import annotations

import io

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger

from helpers import CONF_DIR
from mnist_logreg.runs.training import build_trainer

GROUPS = ["data", "model", "optimizer", "trainer", "logger", "callbacks", "debug", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


@pytest.mark.slow  # builds every option's callbacks, loggers (an MLflow store) and trainer: seconds
@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(compose_train, group: str, option: str) -> None:
    cfg = compose_train(f"{group}={option}")
    assert HydraConfig.get().runtime.choices[group] == option
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.Optimizer)
    for part, kind in (("callbacks", Callback), ("logger", Logger)):
        for name, node in (cfg.get(part) or {}).items():
            if node is not None:
                assert isinstance(instantiate(node), kind), f"{part}.{name}"
    if cfg.trainer.accelerator != "gpu" or torch.cuda.is_available():
        trainer = instantiate(cfg.trainer, logger=False)
        assert trainer.max_epochs == (1 if cfg.trainer.get("fast_dev_run") else cfg.trainer.max_epochs)


def test_defaults_are_the_tutorial(compose_train) -> None:
    cfg = compose_train()
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.001, 0.0, 0.0)
    assert (cfg.data.batch_size, cfg.trainer.max_epochs, cfg.seed) == (100, 5, 0)
    assert compose_train("experiment=tutorial") == cfg


def test_user_overrides_reach_the_config(compose_train) -> None:
    cfg = compose_train("optimizer=adam", "optimizer.lr=0.01", "data.batch_size=256", "seed=7", "trainer=cpu")
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 0.01
    assert cfg.data.batch_size == 256 and cfg.data.shuffle_seed == 7
    assert cfg.trainer.accelerator == "cpu"


def test_data_dir_is_resolved_against_the_launch_directory(compose_train) -> None:
    cfg = compose_train()
    assert cfg.data.data_dir == str(CONF_DIR.parent / "data")


@pytest.mark.parametrize(
    ("overrides", "bar", "checkpoint"),
    [
        ((), "EpochLines", "ResumableCheckpoint"),  # the output is not a terminal: lines, not a bar
        (
            ("callbacks.progress_bar=null",),
            None,
            "ResumableCheckpoint",
        ),  # not Lightning's default bar instead
        (
            ("callbacks.progress_bar=null", "+trainer.enable_progress_bar=true"),
            "RichProgressBar",  # Lightning's own default where `rich` is installed
            "ResumableCheckpoint",
        ),
        (
            ("callbacks.model_checkpoint=null",),
            "EpochLines",
            "ModelCheckpoint",
        ),  # Lightning's: last epoch
    ],
)
def test_a_callback_set_to_null_is_gone(compose_train, overrides, bar, checkpoint, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdout", io.StringIO())  # not a terminal, even under `pytest -s`
    trainer = build_trainer(compose_train("trainer.accelerator=cpu", *overrides))
    assert type(trainer.progress_bar_callback).__name__ == (bar or "NoneType")
    assert type(trainer.checkpoint_callback).__name__ == checkpoint
