"""The Optuna study a search keeps: where it is stored, how trials are pruned, and what each job is told.

One module for the three places that open a study: the sweeper (`hydra_plugins.mnist_logreg.optuna_sweeper`),
the pruning callback in each job (`callbacks/optuna_pruning.py`), and the sweep report (`sweep.py`).

A storage is named by one string: an Optuna RDB URL (`sqlite:///search.db` on one machine,
`postgresql://host/db` for many) or a file path ending in `.journal` (Optuna's journal file storage: an
append-only log, safe on a shared file system, no server).
"""

from __future__ import annotations

import os
import random
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

JOURNAL_SUFFIX = ".journal"
STUDY_FILE = "study.yaml"  # in a sweep dir: the storage and name of its study, for the sweep report
PRUNERS = ("median", "hyperband")
# Trial user attributes the sweeper writes: when its worker last showed it was alive, where the job ran
# (a trial over folds: the folder of its folds' job directories, and those), each fold's value, which lost
# trial a retry repeats, and why a trial that never ran failed.
ERROR = "error"
HEARTBEAT = "heartbeat"
JOB_DIR = "job_dir"
JOB_DIRS = "job_dirs"
FOLD_VALUES = "fold_values"
RETRY_OF = "retry_of"
# A trial over folds reports fold i's epoch e at step i * FOLD_STEP + e: steps of its own for each fold,
# which other trials' same fold and epoch share (no run has this many epochs).
FOLD_STEP = 100_000
CREATE_ATTEMPTS = 5
SQLITE_TIMEOUT_S = 60  # several workers on one SQLite file wait for each other's writes, not fail at once


def absolute(storage: str) -> str:
    """The storage with a relative file path made absolute: jobs may run in another directory or machine."""
    if storage.endswith(JOURNAL_SUFFIX) and "://" not in storage:
        return os.path.abspath(storage)
    prefix = "sqlite:///"
    if storage.startswith(prefix) and not storage.startswith(prefix + "/") and ":memory:" not in storage:
        return prefix + os.path.abspath(storage[len(prefix) :])
    return storage


def open_storage(storage: str) -> optuna.storages.BaseStorage:
    """The Optuna storage that `storage` names: a journal file, or a database by its URL."""
    import optuna

    if storage.endswith(JOURNAL_SUFFIX) and "://" not in storage:
        # Optuna's default lock (a symlink, atomic on NFS too), as every other tool that opens the file
        # (optuna-dashboard, a user's script) takes it.
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    from sqlalchemy.exc import SQLAlchemyError

    if "://" not in storage:
        raise ValueError(
            f"storage={storage}: use an Optuna database URL (sqlite:///search.db, postgresql://host/db) or a "
            f"file path ending in {JOURNAL_SUFFIX}"
        )

    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    # Workers started together on a new database all create its tables: all but one may find them made
    # meanwhile (`table ... already exists`). Again, they see the tables and use them.
    for attempt in range(1, CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
        except SQLAlchemyError:
            time.sleep(random.uniform(0.1, 0.5) * attempt)
    return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)


def make_pruner(name: str | None) -> optuna.pruners.BasePruner:
    """Optuna's pruner by name: `median`, `hyperband`, or None (no pruning).

    `median` stops a trial whose value at an epoch is worse than the median of the earlier trials' values
    at that epoch, from the second trial on (Optuna's default waits for 5 trials, a quarter of a 20-trial
    search, and saves much less: benchmarks/pruning.py, docs/sweeps.md). `hyperband` gives most trials one
    epoch and the best of them more, up to the longest trial's epochs.
    """
    import optuna

    if name is None:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    raise ValueError(f"hydra.sweeper.pruner={name}: use one of {', '.join(PRUNERS)}, or null for none")


def load_trial(storage: str, study_name: str, number: int, pruner: str | None) -> optuna.trial.Trial:
    """Trial `number` of a stored study, to report to from a job in another process (or machine)."""
    import optuna

    backend = open_storage(storage)
    study = optuna.load_study(
        study_name=study_name,
        storage=backend,
        pruner=make_pruner(pruner),
        sampler=optuna.samplers.RandomSampler(),  # a job reports values; it samples nothing
    )
    study_id = backend.get_study_id_from_name(study_name)
    return optuna.trial.Trial(study, backend.get_trial_id_from_study_id_trial_number(study_id, number))
