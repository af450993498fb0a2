"""`logger=mlflow`: a run's params, metrics, tags and artifacts, as MLflow's own client reads them; a resume.

(A parallel sweep that records a run per job: tests/test_sweep.py, with the joblib launcher.)
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import compose_config
from mnist_logreg.errors import UserError
from mnist_logreg.runs.training import build_trainer, train
from mnist_logreg.runtime import group_choices
from mnist_logreg.tracking.hparams import flatten_config
from mnist_logreg.tracking.mlflow import RUN_ID_KEY

TINY = ("data.val_size=100", "data.batch_size=50", "trainer.accelerator=cpu", "callbacks.progress_bar=null")


def find_run(cfg, output_dir: Path):
    """The MLflow run of the run directory `output_dir`, through the store the config names."""
    client = MlflowClient(cfg.logger.mlflow.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.mlflow.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id], f"tags.run_dir = '{output_dir}'")
    return client, run


@pytest.mark.slow
def test_a_run_records_params_final_metrics_tags_and_artifacts(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train(
        f"data.data_dir={tiny_mnist}",
        *TINY,
        "optimizer.lr=0.05",
        "trainer.max_epochs=2",
        "logger=tensorboard_mlflow",
        "tags=[baseline,sgd]",
    )
    out = Path(cfg.paths.output_dir)
    (out / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")  # as Hydra writes it before a run
    metrics = train(cfg)
    client, run = find_run(cfg, out)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"  # the run directory's name

    # Params: the flattened config, and the option chosen in each group.
    assert run.data.params == {
        key: str(value) for key, value in {**group_choices(), **flatten_config(cfg)}.items()
    }
    assert run.data.params["optimizer"] == "sgd" and run.data.params["optimizer/lr"] == "0.05"
    # Tags: the `tags` list, and where the run's files are.
    tags = run.data.tags
    assert tags["baseline"] == tags["sgd"] == "" and tags["run_dir"] == str(out) and "sweep" not in tags
    assert tags["status"] == "completed"
    # What made it, as MLflow's standard tags: the same commit as metrics.json.
    code = metrics["provenance"]["code"]
    assert tags["mlflow.source.git.commit"] == code["commit"] != "unknown"
    assert tags["code.modified"] == str(code["modified"]).lower()

    # Metrics: TensorBoard's, point for point, and the final ones of metrics.json.
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for name in events.Tags()["scalars"]:
        if name.startswith("hparams/"):  # TensorBoard's HParams record; MLflow's are the final metrics below
            continue
        history = client.get_metric_history(run.info.run_id, name)
        mlflow_points = sorted((m.step, m.value) for m in history)
        tensorboard_points = sorted((e.step, e.value) for e in events.Scalars(name))
        assert [step for step, _ in mlflow_points] == [step for step, _ in tensorboard_points]
        # TensorBoard keeps float32 values: the logged learning rate 0.05 reads back as 0.05000000074505806.
        assert [v for _, v in mlflow_points] == pytest.approx([v for _, v in tensorboard_points], rel=1e-6)
    final = run.data.metrics
    assert final["val/acc_best"] == metrics["val/acc"] and final["test/acc"] == metrics["test/acc"]
    assert final["fit_time_s"] == metrics["fit_time_s"] and final["steps"] == metrics["steps"] == 20
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # one per epoch, as logged

    # Artifacts: what the run directory holds, the same bytes.
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {
        ".hydra", "checkpoints", "figures", "metrics.json", "provenance",
    }  # fmt: skip
    local = Path(client.download_artifacts(run.info.run_id, ""))
    assert json.loads((local / "metrics.json").read_text()) == json.loads((out / "metrics.json").read_text())
    names = [".hydra/config.yaml", "checkpoints/best.ckpt", "figures/confusion_matrix.png"]
    names += ["provenance/environment.txt"] + (["provenance/code.patch"] if code["modified"] else [])
    for name in names:
        assert (local / name).read_bytes() == (out / name.removeprefix("provenance/")).read_bytes(), name


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(
    tmp_path: Path, tiny_mnist: Path, mlflow_dir: Path, caplog
) -> None:
    def run(name: str, *overrides: str) -> Path:
        output_dir = tmp_path / name
        cfg = compose_config(
            [f"data.data_dir={tiny_mnist}", *TINY, "logger=mlflow", *overrides],
            output_dir,
            log_dir=mlflow_dir,
        )
        train(cfg)
        return output_dir

    first = run("first", "trainer.max_epochs=1", "logger.mlflow.experiment_name=resume")
    last = first / "checkpoints" / "last.ckpt"
    run_id = torch.load(last, weights_only=True)[RUN_ID_KEY]
    caplog.set_level(logging.WARNING)
    second = run(
        "second", "trainer.max_epochs=2", "logger.mlflow.experiment_name=resume", f"ckpt_path={last}"
    )

    client = MlflowClient(f"sqlite:///{mlflow_dir}/mlflow.db")
    (resumed,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    assert resumed.info.run_name == "first" and resumed.data.tags["run_dir"] == str(second)
    history = client.get_metric_history(run_id, "val/acc")
    assert [m.step for m in history] == [9, 19]  # epoch 1 from the first run, epoch 2 from the resumed one
    assert torch.load(second / "checkpoints" / "last.ckpt", weights_only=True)[RUN_ID_KEY] == run_id
    # MLflow keeps a param's first value: the resumed run says so, and adds the new one.
    assert resumed.data.params["trainer/max_epochs"] == "1" and resumed.data.params["ckpt_path"] == str(last)
    assert "trainer/max_epochs=1 stays, not 2" in caplog.text

    # A checkpoint whose MLflow run is gone (deleted, or in another store) starts a new one.
    client.delete_run(run_id)
    third = run("third", "trainer.max_epochs=2", "logger.mlflow.experiment_name=resume", f"ckpt_path={last}")
    (new,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert (
        new.info.run_id != run_id and new.info.run_name == "third" and new.data.tags["run_dir"] == str(third)
    )
    assert (
        f"logged to MLflow run {run_id}, not in sqlite:///{mlflow_dir}/mlflow.db: a new run starts"
        in caplog.text
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stopper", "status", "ended"),
    [
        ("test_resume.TermAt", "KILLED", "interrupted"),
        ("test_resume.CrashAt", "FAILED", "failed"),
        ("test_hparams.PruneAt", "KILLED", "pruned"),
    ],
)
def test_a_run_stopped_by_a_signal_or_pruned_is_killed_one_that_crashed_failed(
    tmp_path: Path, tiny_mnist: Path, mlflow_dir: Path, stopper: str, status: str, ended: str
) -> None:
    output_dir = tmp_path / "run"
    stop = [f"+callbacks.stop._target_={stopper}", "+callbacks.stop.step=3"]
    cfg = compose_config(
        [f"data.data_dir={tiny_mnist}", *TINY, "logger=mlflow", "logger.mlflow.experiment_name=stops", *stop],
        output_dir,
        log_dir=mlflow_dir,
    )
    with pytest.raises((SystemExit, Exception)):
        train(cfg)
    _, run = find_run(cfg, output_dir)
    assert run.info.status == status and run.data.tags["status"] == ended  # as TensorBoard's HParams row


def test_without_mlflow_the_error_names_the_extra(compose_train, monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "mlflow" else real_find_spec(name)
    )
    with pytest.raises(
        UserError, match=r'logger.mlflow needs mlflow, which is not installed: pip install -e "\.\[mlflow\]"'
    ):
        build_trainer(compose_train("logger=tensorboard_mlflow", "trainer.accelerator=cpu"))
