"""A run's MLflow record, beside TensorBoard or instead: `python train.py logger=tensorboard_mlflow` (or
`logger=mlflow`).

Lightning's `MLFlowLogger` logs the same metrics as TensorBoard while the run trains. Around it, this module
adds what the logger leaves to its user:
- before the logger is built, the store's tables and the experiment are created under a lock: the jobs of a
  parallel sweep would otherwise race to create them, and all but one fail (`logger_options`);
- the run's life, in one callback (`callbacks/mlflow_run.py`): params and tags at the start, the run's id
  in every checkpoint, the final metrics and the artifacts at the end;
- a run stopped by a signal (Ctrl-C, SIGTERM, a requeue) ends KILLED, not FAILED: it is resumable
  (`MLflowLogger`, where Lightning ends the run).

The store is a SQLite file, `logs/mlflow.db`, that every run and sweep job writes to and that
`mlflow ui --backend-store-uri sqlite:///logs/mlflow.db` reads: no server is needed. MLflow's sessions wait
for each other's writes to that file (SQLite's busy timeout), so parallel jobs only take turns.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock
from lightning.pytorch.loggers import Logger, MLFlowLogger
from omegaconf import DictConfig

from mnist_logreg.errors import require_extra
from mnist_logreg.outputs import Status, ended_by

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

RUN_ID_KEY = "mlflow_run_id"  # in each checkpoint
SQLITE = "sqlite:///"


def logger_options(name: str, node: DictConfig, run_name: str, resumed_run_id: str | None) -> dict[str, Any]:
    """What an MLflow logger's config cannot say: the run's name and, resuming, the run to continue (the one
    the checkpoint logged to, `resumed_run_id`).

    Creates the store and the experiment first (see `prepare_store`).
    """
    require_extra("mlflow", "mlflow", needed_by=f"logger.{name}")
    client = prepare_store(node)
    options: dict[str, Any] = {}
    if node.get("run_name") is None:
        options["run_name"] = run_name
    if node.get("run_id") is None and resumed_run_id:
        run_id: str | None = resumed_run_id
        if client is not None and not _has_run(client, resumed_run_id):
            uri = node.tracking_uri
            log.warning("The checkpoint logged to MLflow run %s, not in %s: a new run starts", run_id, uri)
            run_id = None
        options["run_id"] = run_id
    return options


def _has_run(client: MlflowClient, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def prepare_store(node: DictConfig) -> MlflowClient | None:
    """Create the store's tables and the experiment, one process at a time (a lock file beside a SQLite
    store), before Lightning's logger looks for them: then no two jobs of a sweep both find them missing.

    The store's client; None where the config names no store (MLflow's default, `MLFLOW_TRACKING_URI`)."""
    from mlflow import MlflowClient

    # MLflow prints through a handler of its own; Hydra's handlers print every record (and keep train.log).
    logging.getLogger("mlflow").handlers.clear()
    logging.getLogger("mlflow").propagate = True

    uri = node.get("tracking_uri")
    if not uri:
        return None
    lock: contextlib.AbstractContextManager = contextlib.nullcontext()
    if uri.startswith(SQLITE):
        database = Path(uri.removeprefix(SQLITE))
        database.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{database}.lock")
    with lock:
        client = MlflowClient(uri)
        if client.get_experiment_by_name(node.experiment_name) is None:
            client.create_experiment(node.experiment_name, artifact_location=node.get("artifact_location"))
    return client


class MLflowLogger(MLFlowLogger):
    """Lightning's `MLFlowLogger`, except that a run ended by a signal (Ctrl-C, SIGTERM, a requeue:
    `StopOnInterrupt` saved it and ended the process) is KILLED, not FAILED: it is resumable, and RUNNING
    again when resumed. A search trial that its pruner stopped is KILLED too (its `status` tag: pruned).

    Lightning ends the run with `finalize("failed")` while it handles the exception, after the callbacks'
    `on_exception`, so the exception is still the one being handled here.
    """

    def finalize(self, status: str = "success") -> None:
        error = sys.exc_info()[1]
        if status == "failed" and error is not None and ended_by(error) != Status.FAILED:
            status = "KILLED"  # interrupted, or pruned: stopped on purpose, not failed
        super().finalize(status)


def provenance_tags(provenance: dict[str, Any]) -> dict[str, str]:
    """What made the run, as MLflow's standard tags (`mlflow.source.git.commit`, `mlflow.source.git.branch`,
    `mlflow.source.name`), and `code.modified` (true: `code.patch` is among the run's artifacts)."""
    code = provenance.get("code") or {}
    tags = {"mlflow.source.type": "LOCAL"}
    if provenance.get("command"):
        tags["mlflow.source.name"] = provenance["command"].split()[1]  # `python <script> ...`
    if code.get("commit") not in (None, "unknown"):
        tags["mlflow.source.git.commit"] = code["commit"]
        tags["code.modified"] = str(bool(code.get("modified"))).lower()
    if code.get("branch"):
        tags["mlflow.source.git.branch"] = code["branch"]
    return tags if provenance else {}


def provenance_files(output_dir: Path, provenance: dict[str, Any]) -> list[Path]:
    """The provenance's files in the run directory: the patch of a modified tree, the environment."""
    names = [(provenance.get("code") or {}).get("patch"), provenance.get("environment")]
    return [output_dir / name for name in names if name]


def mlflow_logger(loggers: list[Logger]) -> MLFlowLogger | None:
    return next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)
