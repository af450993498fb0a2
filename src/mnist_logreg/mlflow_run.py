"""A run's MLflow record, beside TensorBoard or instead: `python train.py logger=tensorboard_mlflow` (or
`logger=mlflow`).

Lightning's `MLFlowLogger` logs the same metrics as TensorBoard while the run trains. Around it, this module
adds what the logger leaves to its user:
- before the logger is built, the store's tables and the experiment are created under a lock: the jobs of a
  parallel sweep would otherwise race to create them, and all but one fail;
- at the start, the flattened config as params, the `tags` list as tags (and `run_dir`, `sweep`);
- in every checkpoint, the MLflow run's id, so that a run resumed from it (`ckpt_path=`) logs to that run;
- at the end, the final metrics (`val/acc_best`: the tested checkpoint's) and the artifacts: the figures,
  `metrics.json`, `.hydra/config.yaml` and the best checkpoint;
- a run stopped by a signal (Ctrl-C, SIGTERM, a requeue) is KILLED, not FAILED: it is resumable.

The store is a SQLite file, `logs/mlflow.db`, that every run and sweep job writes to and that
`mlflow ui --backend-store-uri sqlite:///logs/mlflow.db` reads: no server is needed. MLflow's sessions wait
for each other's writes to that file (SQLite's busy timeout), so parallel jobs only take turns.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
from filelock import FileLock
from hydra.utils import get_object
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, MLFlowLogger
from omegaconf import DictConfig

from mnist_logreg.callbacks.figures import ModelFigures
from mnist_logreg.checkpoints import LAST, read_checkpoint
from mnist_logreg.errors import UserError, in_multirun
from mnist_logreg.hparams import flatten_config, group_choices, run_name, sweep_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

RUN_ID_KEY = "mlflow_run_id"  # in each checkpoint
SQLITE = "sqlite:///"


def is_mlflow(node: DictConfig) -> bool:
    target = get_object(node._target_) if "_target_" in node else None
    return isinstance(target, type) and issubclass(target, MLFlowLogger)


def logger_options(name: str, node: DictConfig, ckpt_path: str | None) -> dict[str, Any]:
    """What an MLflow logger's config cannot say: the run's name and, resuming, the run to continue.

    Empty for other loggers. Creates the store and the experiment first (see `prepare_store`).
    """
    if not is_mlflow(node):
        return {}
    if importlib.util.find_spec("mlflow") is None:
        raise UserError(f'logger.{name} needs MLflow, which is not installed: pip install -e ".[mlflow]"')
    client = prepare_store(node)
    options: dict[str, Any] = {}
    if node.get("run_name") is None:
        options["run_name"] = run_name()
    if node.get("run_id") is None and ckpt_path:
        run_id = read_checkpoint(ckpt_path, (), LAST).get(RUN_ID_KEY)
        if run_id and client is not None and not _has_run(client, run_id):
            uri = node.tracking_uri
            log.warning("%s logged to MLflow run %s, not in %s: a new run starts", ckpt_path, run_id, uri)
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


def mlflow_callbacks(loggers: list[Logger]) -> list[Callback]:
    """What a trainer with an MLflow logger needs besides the configured callbacks: `MLflowRunId`."""
    return [MLflowRunId()] if mlflow_logger(loggers) is not None else []


class MLflowRunId(Callback):
    """Keeps the MLflow run's id in each checkpoint: a run resumed from one continues the same MLflow run."""

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        logger = mlflow_logger(trainer.loggers)
        if logger is not None:
            checkpoint[RUN_ID_KEY] = logger.run_id


def mlflow_logger(loggers: list[Logger]) -> MLFlowLogger | None:
    return next((lg for lg in loggers if isinstance(lg, MLFlowLogger)), None)


def start_mlflow_run(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Open the MLflow run (a new one, or the resumed one) and record its params and tags (rank 0 only)."""
    logger = mlflow_logger(trainer.loggers)
    if logger is None:
        return
    from mlflow.entities import RunTag

    client, run_id = logger.experiment, logger.run_id
    run = client.get_run(run_id)
    if run.info.status != "RUNNING":  # a resumed run, finished or failed before: it runs again
        client.update_run(run_id, status="RUNNING")

    # MLflow refuses to change a param: a resumed run adds the new ones and keeps the others as they were.
    params = {**group_choices(), **flatten_config(cfg)}
    recorded = run.data.params
    changed = [key for key, value in params.items() if key in recorded and recorded[key] != str(value)]
    if changed:
        log.warning(
            "MLflow keeps a run's first params: %s=%s stays, not %s (%d differ)",
            changed[0],
            recorded[changed[0]],
            params[changed[0]],
            len(changed),
        )
    logger.log_hyperparams({key: value for key, value in params.items() if key not in recorded})

    tags = dict.fromkeys(map(str, cfg.get("tags") or []), "")
    tags["run_dir"] = str(Path(cfg.paths.output_dir).resolve())
    if in_multirun():
        tags["sweep"] = sweep_name()
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])


@contextlib.contextmanager
def killed_when_stopped(trainer: L.Trainer) -> Iterator[None]:
    """Lightning ends the MLflow run as FAILED on any exception; one stopped by a signal (`StopOnInterrupt`
    saved it and ended the process with SystemExit or KeyboardInterrupt) is marked KILLED instead. It becomes
    RUNNING again when it is resumed."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit):
        logger = mlflow_logger(trainer.loggers)
        if logger is not None and trainer.is_global_zero:
            logger.experiment.set_terminated(logger.run_id, "KILLED")
        raise


def finish_mlflow_run(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, Any]) -> None:
    """Add the final metrics and the artifacts to the run (rank 0 only, before `metrics.json` is written).

    `val/acc` in metrics.json is the tested checkpoint's, not the last validation's, so it is recorded as
    `val/acc_best`; the metrics Lightning already logged (`test/acc`, ...) are not logged twice.
    """
    logger = mlflow_logger(trainer.loggers)
    if logger is None:
        return
    from mlflow.entities import Metric

    client, run_id = logger.experiment, logger.run_id
    logged = client.get_run(run_id).data.metrics
    now = int(time.time() * 1000)
    final = []
    for key, value in metrics.items():
        key = "val/acc_best" if key == "val/acc" else key
        if isinstance(value, (int, float)) and key != "seed" and logged.get(key) != value:
            final.append(Metric(key, float(value), now, trainer.global_step))
    client.log_batch(run_id, metrics=final)

    output_dir = Path(cfg.paths.output_dir)
    client.log_dict(run_id, metrics, "metrics.json")  # the same content; metrics.json itself comes last
    config = output_dir / ".hydra" / "config.yaml"
    if config.is_file():
        client.log_artifact(run_id, str(config), ".hydra")
    for callback in trainer.callbacks:
        if isinstance(callback, ModelFigures) and callback.dirpath.is_dir():
            client.log_artifacts(run_id, str(callback.dirpath), "figures")
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if best:
        client.log_artifact(run_id, best, "checkpoints")
