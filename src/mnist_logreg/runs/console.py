"""What a run prints: the config as a tree at the start, progress fit for a terminal or for a log file, known-
harmless library chatter silenced, and a short results table at the end."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, TextIO

from mnist_logreg.runtime import in_multirun

log = logging.getLogger(__name__)


def quiet_libraries() -> None:
    """Silence messages that say nothing about this project's runs; real warnings still show."""
    # `import lightning` gives its logger a console handler of its own, while Hydra's root handler already
    # prints every record (and writes it to the run's log file): each line would show twice.
    logging.getLogger("lightning").handlers.clear()
    # The same for submitit, in a job started by `hydra/launcher=submitit_*`.
    logging.getLogger("submitit").handlers.clear()
    # Advertisements for hosted services, printed by every Trainer.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip")
    )
    # Lightning 2.6 calls an API that torch >= 2.10 marks deprecated; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # A run resumed into a new directory: `last.ckpt`'s callback has nothing to carry over (it writes a new
    # one at the next validation); `ResumableCheckpoint` carries the best one over itself.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # The range test (find_lr.py) saves and restores the model around its steps without saying how.
    logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector").addFilter(
        lambda record: not record.getMessage().startswith("`weights_only` was not set")
    )
    # A sweep's job prints its epoch lines and its result (the launcher shows its overrides), not Lightning's
    # lines on the accelerators found, the same for every job, which come through this logger at INFO.
    if in_multirun():
        logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def format_results(metrics: dict[str, Any]) -> str:
    """The final table: accuracies and losses, then wall times."""
    rows: list[tuple[str, str]] = [
        (name, f"{metrics[name]:.4f}") for name in ("val/acc", "test/acc", "test/loss") if name in metrics
    ]
    times = (("fit time", "fit_time_s"), ("test time", "test_time_s"))
    rows += [(name, f"{metrics[key]:.1f} s") for name, key in times if key in metrics]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


class StdoutHandler(logging.StreamHandler):
    """The console's log handler (conf/hydra/default.yaml): it writes each record to `sys.stdout` as it is
    then, not as it was when logging was set up. While rich's progress bar is live, `sys.stdout` is rich's
    proxy, which prints the line above the bar; written past it, the line would land inside the bar."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream or sys.stdout)

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stdout)
        super().emit(record)
