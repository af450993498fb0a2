"""A run's MLflow record, beside TensorBoard or instead: `python train.py logger=tensorboard_mlflow` (or
`logger=mlflow`).

Lightning's `MLFlowLogger` logs the same metrics as TensorBoard while the run trains. Around it, this module
adds what the logger leaves to its user:
- before the logger is built, the store's tables and the experiment are created under a lock: the jobs of a
  parallel sweep would otherwise race to create them, and all but one fail (`logger_options`);
- the run's life, in one callback (`MLflowRun`): at the start, the flattened config as params, the `tags`
  list as tags (and `run_dir`, `sweep`); in every checkpoint, the MLflow run's id, so that a run resumed
  from it (`ckpt_path=`) logs to that run; at the end, the final metrics (`val/acc_best`: the tested
  checkpoint's) and the artifacts: the figures, `metrics.json`, `.hydra/config.yaml` and the best checkpoint;
- a run stopped by a signal (Ctrl-C, SIGTERM, a requeue) ends KILLED, not FAILED: it is resumable
  (`MLflowLogger`, where Lightning ends the run).

The store is a SQLite file, `logs/mlflow.db`, that every run and sweep job writes to and that
`mlflow ui --backend-store-uri sqlite:///logs/mlflow.db` reads: no server is needed. MLflow's sessions wait
for each other's writes to that file (SQLite's busy timeout), so parallel jobs only take turns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from filelock import FileLock
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, MLFlowLogger
from omegaconf import DictConfig

from mnist_logreg.callbacks.figures import ModelFigures
from mnist_logreg.callbacks.run_record import RunRecord
from mnist_logreg.errors import UserError

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
    if importlib.util.find_spec("mlflow") is None:
        raise UserError(f'logger.{name} needs MLflow, which is not installed: pip install -e ".[mlflow]"')
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
    again when resumed.

    Lightning ends the run with `finalize("failed")` while it handles the exception, after the callbacks'
    `on_exception`, so the exception is still the one being handled here.
    """

    def finalize(self, status: str = "success") -> None:
        if status == "failed" and isinstance(sys.exc_info()[1], (KeyboardInterrupt, SystemExit)):
            status = "KILLED"
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


class MLflowRun(Callback):
    """The MLflow run's life around Lightning's logger, on rank 0.

    - at the start (`setup`): the run is RUNNING (a resumed one was ended before), with `params` (MLflow keeps
      a run's first params: a resumed run adds new ones only) and `tags`;
    - in every checkpoint: the run's id, so that a run resumed from it continues the same MLflow run;
    - at the end (`teardown` of the run's last stage, before `metrics.json` is written): the final metrics
      (`val/acc` as `val/acc_best`: the tested checkpoint's, not the last validation's) and the artifacts:
      `metrics.json`'s content, `config_file`, the figures, the best checkpoint and `provenance_files`
      (`code.patch`, `environment.txt`) under `provenance/`.
    """

    def __init__(
        self,
        params: dict[str, Any],
        tags: dict[str, str],
        config_file: str | Path | None = None,
        last_stage: str = "test",
        provenance_files: Sequence[Path] = (),
    ) -> None:
        self.params = params
        self.tags = tags
        self.config_file = Path(config_file) if config_file else None
        self.last_stage = last_stage
        self.provenance_files = list(provenance_files)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is None or stage != "fit" or not trainer.is_global_zero:
            return
        from mlflow.entities import RunTag

        client, run_id = logger.experiment, logger.run_id
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":  # a resumed run, stopped or failed before: it runs again
            client.update_run(run_id, status="RUNNING")
        recorded = run.data.params
        changed = [
            key for key, value in self.params.items() if key in recorded and recorded[key] != str(value)
        ]
        if changed:
            key = changed[0]
            log.warning(
                "MLflow keeps a run's first params: %s=%s stays, not %s (%d differ)",
                key,
                recorded[key],
                self.params[key],
                len(changed),
            )
        logger.log_hyperparams({key: value for key, value in self.params.items() if key not in recorded})
        client.log_batch(run_id, tags=[RunTag(key, value) for key, value in self.tags.items()])

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is not None:
            checkpoint[RUN_ID_KEY] = logger.run_id

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is None or stage != self.last_stage or not trainer.is_global_zero:
            return
        from mlflow.entities import Metric

        record = next((c for c in trainer.callbacks if isinstance(c, RunRecord)), None)  # none: find_lr
        metrics = record.metrics if record is not None else {}
        client, run_id = logger.experiment, logger.run_id
        logged = client.get_run(run_id).data.metrics
        now = int(time.time() * 1000)
        final = []
        for key, value in metrics.items():
            key = "val/acc_best" if key == "val/acc" else key
            if isinstance(value, (int, float)) and key != "seed" and logged.get(key) != value:
                final.append(Metric(key, float(value), now, trainer.global_step))
        client.log_batch(run_id, metrics=final)
        client.log_dict(run_id, metrics, "metrics.json")  # the same content; metrics.json itself comes last
        if self.config_file is not None and self.config_file.is_file():
            client.log_artifact(run_id, str(self.config_file), ".hydra")
        for path in self.provenance_files:
            if path.is_file():
                client.log_artifact(run_id, str(path), "provenance")
        for callback in trainer.callbacks:
            if isinstance(callback, ModelFigures) and callback.dirpath.is_dir():
                client.log_artifacts(run_id, str(callback.dirpath), "figures")
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if best:
            client.log_artifact(run_id, best, "checkpoints")
