"""What a run prints: known-harmless library chatter silenced, and a short results table at the end."""

from __future__ import annotations

import logging
import shlex
import warnings
from typing import Any

from hydra.core.hydra_config import HydraConfig


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


def format_results(metrics: dict[str, Any]) -> str:
    """The final table: accuracies and losses, then wall times."""
    rows = [
        (name, f"{metrics[name]:.4f}") for name in ("val/acc", "test/acc", "test/loss") if name in metrics
    ]
    times = (("fit time", "fit_time_s"), ("test time", "test_time_s"))
    rows += [(name, f"{metrics[key]:.1f} s") for name, key in times if key in metrics]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def command_line(script: str, *added: str, drop: tuple[str, ...] = ()) -> str:
    """`python <script>` with this run's command-line overrides, less those starting with `drop` (and
    Hydra's own), plus `added`: a command to print that reruns this run with a change."""
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", *drop))]
    return " ".join(["python", script, *map(shlex.quote, kept), *added])
