"""DDP under Hydra: refused in a multirun where Lightning would start the ranks itself.

Lightning starts ranks 1..N-1 of a DDP run by running the command line (`sys.argv`) again, `LOCAL_RANK` set.
For a single run that is right: Lightning adds `hydra.run.dir=<this run's directory>`, so every rank trains in
the same directory and rank 0 alone writes the outputs. Inside a multirun the command line is the whole sweep,
so each extra rank would start a sweep of its own. Where the processes are started by the cluster instead
(SLURM's `srun`, `torchrun`), nothing is re-run, and DDP inside a sweep is correct.
"""

from __future__ import annotations

import lightning as L

from mnist_logreg.errors import UserError
from mnist_logreg.runtime import in_multirun


def refuse_relaunch_in_multirun(trainer: L.Trainer) -> None:
    """Raise a `UserError` before `fit` if this multirun job would start processes for its DDP ranks.

    Judged from public attributes: several processes that the cluster does not create. Lightning's launchers
    are private classes, so a `ddp_spawn` job (which would not re-run the sweep) is refused too.
    """
    processes = trainer.num_devices * trainer.num_nodes
    environment = getattr(trainer.strategy, "cluster_environment", None)  # a parallel strategy's only
    external = environment is not None and environment.creates_processes_externally
    if processes > 1 and not external and in_multirun():
        raise UserError(
            f"trainer.devices={trainer.num_devices} with DDP cannot run inside a multirun (-m): Lightning "
            "would start each extra process by re-running the whole sweep. Sweep with one process per job "
            "(trainer.devices=1), or let SLURM start each job's processes: hydra/launcher=slurm "
            f"hydra.launcher.tasks_per_node={trainer.num_devices} (README: GPU and clusters)."
        )
