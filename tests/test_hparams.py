"""The HParams record TensorBoard reads, in the run's own event files: the flattened config and the run's real
final scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from helpers import compose_config, hparams_row
from mnist_logreg.callbacks.optuna_pruning import TrialPruned
from mnist_logreg.runs.training import train
from mnist_logreg.tracking.hparams import flatten_config, hyperparameters


def read_events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events


class PruneAt(L.Callback):
    """Stops the run at a step as an Optuna pruner would, with the value the trial had reached."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise TrialPruned("Trial 3 pruned at epoch 1", {"val/acc": 0.25, "epochs": 1})


@pytest.mark.slow
def test_hparams_hold_the_flat_config_and_the_metrics_json_scores(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train(
        f"data.data_dir={tiny_mnist}",
        "data.val_size=100",
        "data.batch_size=50",
        "optimizer.lr=0.05",
        "trainer.max_epochs=3",
        "trainer.accelerator=cpu",
        "callbacks.progress_bar.refresh_rate=0",
        "tags=[baseline,sgd]",
    )
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert json.loads((out / "metrics.json").read_text()) == metrics

    # One TensorBoard run per run: the record is in the training run's own event files, written by
    # Lightning's `TensorBoardLogger.log_hyperparams(params, metrics)`.
    assert [p.name for p in (out / "tensorboard").iterdir() if p.is_dir()] == []
    events = read_events(out / "tensorboard")
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.SESSION_START_INFO_TAG in content
    hparams, session, experiment, _ = hparams_row(out / "tensorboard")
    assert hparams == {"status": "completed", **hyperparameters(cfg)}
    assert session.group_name == out.name  # the Trial ID column: the run directory's name
    # TensorBoard sorts the columns that differ first, then by name: the status and the run's overrides
    # (in a sweep, the swept keys) come before the constant settings.
    first = {info.name for info in experiment.hparam_infos if info.differs}
    assert first == {"status", "data/val_size", "data/batch_size", "optimizer/lr", "trainer/max_epochs"} | {
        "trainer/accelerator",
        "tags",
    }
    assert [m.display_name for m in experiment.metric_infos] == ["val/acc", "test/acc"]
    assert hparams["optimizer/lr"] == 0.05 and hparams["data/batch_size"] == 50
    assert hparams["optimizer"] == "sgd" and hparams["scheduler"] == "none"  # the options chosen, by name
    assert hparams["trainer/max_epochs"] == 3 and hparams["seed"] == 0 and hparams["tags"] == "baseline, sgd"
    # What a person compares runs by, not class paths, callback and logger settings or paths.
    assert not any(key.endswith(("_target_", "_partial_")) for key in hparams)
    assert not any(key.startswith(("callbacks/", "logger/", "paths/")) for key in hparams)
    assert "trainer/default_root_dir" not in hparams and "data/data_dir" not in hparams  # where, not how

    # Exactly the values in metrics.json (the best checkpoint's val/acc and its test/acc), under tags of
    # their own: the training curves get no extra point, and there is no placeholder `hp_metric`.
    scalars = events.Tags()["scalars"]
    for name, tag in (("val/acc", "hparams/val_acc"), ("test/acc", "hparams/test_acc")):
        (point,) = events.Scalars(tag)
        assert point.value == pytest.approx(metrics[name], rel=1e-6)
    assert len(events.Scalars("val/acc")) == 3 and "hp_metric" not in scalars


def test_flat_config_keeps_what_hparams_can_hold(compose_train) -> None:
    cfg = compose_train("ckpt_path=null", "+model.hidden=[1,2]")
    flat = flatten_config(cfg)
    assert "ckpt_path" not in flat  # null: nothing to compare
    assert flat["model/hidden"] == "[1, 2]"  # lists as text
    assert flat["test"] is True and flat["data/shuffle_seed"] == 0  # interpolated from `seed`, kept
    assert flat["optimizer/_target_"] == "torch.optim.SGD"  # the whole config, for MLflow's params
    assert not any(key.startswith("paths/") for key in flat)


def test_hyperparameters_name_the_chosen_options(compose_train) -> None:
    hparams = hyperparameters(compose_train("optimizer=adam", "scheduler=cosine", "experiment=tuned"))
    assert hparams["optimizer"] == "adam" and hparams["experiment"] == "tuned"
    assert hparams["scheduler"] == "cosine" and hparams["scheduler/T_max"] == 20  # the tuned run's epochs
    assert hparams["optimizer/lr"] == 0.0084 and "optimizer/momentum" not in hparams  # Adam has none
    assert hparams["tags"] == "" and "trainer/plugins" not in hparams


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stopper", "status"),
    [
        ("test_resume.CrashAt", "failed"),
        ("test_resume.TermAt", "interrupted"),
        ("test_hparams.PruneAt", "pruned"),
    ],
)
def test_a_run_that_did_not_finish_has_its_row_with_its_status(
    tmp_path: Path, tiny_mnist: Path, stopper: str, status: str
) -> None:
    out = tmp_path / "3_lr-0.05"
    overrides = [
        f"data.data_dir={tiny_mnist}",
        "data.val_size=100",
        "data.batch_size=50",
        "optimizer.lr=0.05",
    ]
    overrides += ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]
    overrides += [f"+callbacks.stop._target_={stopper}", "+callbacks.stop.step=3"]
    with pytest.raises(BaseException):  # noqa: B017 (the crash, SystemExit(143) or the pruning)
        train(compose_config(overrides, out))
    assert not (out / "metrics.json").exists()  # a single run: the row is its only record

    hparams, session, _, scores = hparams_row(out / "tensorboard")
    assert hparams["status"] == status and hparams["optimizer/lr"] == 0.05
    assert session.group_name == "3_lr-0.05"
    # A pruned run's value is the one the trial had reached, as its metrics.json in a search records it.
    assert scores == ({"hparams/val_acc": 0.25} if status == "pruned" else {})


@pytest.mark.slow
def test_a_run_resumed_in_its_directory_replaces_its_row(tmp_path: Path, tiny_mnist: Path) -> None:
    out = tmp_path / "run"
    overrides = [
        f"data.data_dir={tiny_mnist}",
        "data.val_size=100",
        "data.batch_size=50",
        "trainer.max_epochs=1",
    ]
    overrides += ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]
    with pytest.raises(SystemExit):
        train(
            compose_config(
                [*overrides, "+callbacks.stop._target_=test_resume.TermAt", "+callbacks.stop.step=3"], out
            )
        )
    assert hparams_row(out / "tensorboard")[0]["status"] == "interrupted"

    metrics = train(
        compose_config([*overrides, "ckpt_path=auto"], out)
    )  # TensorBoard keeps a run's first row
    hparams, _, _, scores = hparams_row(out / "tensorboard")
    assert hparams["status"] == "completed" and scores["hparams/val_acc"] == pytest.approx(metrics["val/acc"])
