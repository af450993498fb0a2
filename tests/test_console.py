"""The console: rich's live progress in a terminal, one plain line per epoch in a file or a pipe, never a
redrawn bar; the config as a tree; coloured levels in a terminal only, and train.log in the run directory."""

from __future__ import annotations

import io
import logging

import pytest
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar

from mnist_logreg.callbacks.config_tree import config_tree
from mnist_logreg.callbacks.progress import EpochLines
from mnist_logreg.runs.console import StdoutHandler
from mnist_logreg.runs.training import build_trainer


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stdout", "overrides", "bar"),
    [
        (Terminal(), (), RichProgressBar),
        (io.StringIO(), (), EpochLines),  # a file or a pipe
        (io.StringIO(), ("callbacks.progress_bar.refresh_rate=0",), None),  # a bar switched off: no lines
        (Terminal(), ("callbacks.progress_bar=null",), None),
        (io.StringIO(), ("callbacks.progress_bar=null",), None),
    ],
    ids=["terminal", "pipe", "pipe, refresh_rate=0", "terminal, null", "pipe, null"],
)
def test_the_progress_bar_fits_where_the_output_goes(
    compose_train, monkeypatch, stdout, overrides, bar
) -> None:
    monkeypatch.setattr("sys.stdout", stdout)
    trainer = build_trainer(compose_train("trainer.accelerator=cpu", *overrides))
    assert type(trainer.progress_bar_callback) is (type(None) if bar is None else bar)
    summaries = [c for c in trainer.callbacks if isinstance(c, RichModelSummary)]
    assert len(summaries) == 1  # a static table: the same either way


def test_the_config_tree_has_a_branch_per_group(compose_train) -> None:
    tree = config_tree(compose_train("optimizer.lr=0.01"))
    lines = tree.splitlines()
    assert lines[0] == "config" and "├── seed: 0" in lines
    assert (
        "├── optimizer" in lines
        and "│   └── _target_: torch.optim.SGD" in lines
        and "│       lr: 0.01" in lines
    )
    assert "├── callbacks" in lines and "│   ├── model_checkpoint" in lines  # a branch per callback
    assert lines[-1] == "└── scheduler: null" and "\x1b" not in tree  # plain text, for train.log too


def test_log_lines_follow_sys_stdout(monkeypatch) -> None:
    """While rich's bar is live, `sys.stdout` is rich's proxy: a log line must go there, not past it."""
    handler = StdoutHandler()
    live = io.StringIO()
    monkeypatch.setattr("sys.stdout", live)
    handler.emit(logging.makeLogRecord({"msg": "Epoch 1/5", "levelno": logging.INFO}))
    assert live.getvalue() == "Epoch 1/5\n"
