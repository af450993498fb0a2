"""DDP under Hydra: refused in a multirun where Lightning would start the ranks by re-running the script.

Lightning starts ranks 1..N-1 of a DDP run by running the command line (`sys.argv`) again, `LOCAL_RANK` set.
For a single run that is right: Lightning adds `hydra.run.dir=<this run's directory>`, so every rank trains in
the same directory and rank 0 alone writes the outputs. Inside a multirun the command line is the whole sweep,
so each extra rank would start a sweep of its own. Where the processes are started by the cluster instead
(SLURM's `srun`, `torchrun`), nothing is re-run, and DDP inside a sweep is correct.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from mnist_logreg.errors import UserError, in_multirun


def refuse_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """Raise a `UserError` before `fit` if this multirun job would re-launch the script for its DDP ranks."""
    launcher = trainer.strategy.launcher
    relaunches = (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    )
    if relaunches and in_multirun():
        raise UserError(
            f"trainer.devices={launcher.num_processes} with DDP cannot run inside a multirun (-m): Lightning "
            "would start each extra process by re-running the whole sweep. Sweep with one process per job "
            "(trainer.devices=1), or let SLURM start each job's processes: hydra/launcher=slurm "
            f"hydra.launcher.tasks_per_node={launcher.num_processes} (README: GPU and clusters)."
        )
