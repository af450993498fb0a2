"""The Optuna sweeper: search space in Hydra's grammar, failed trials, the best parameters; a tiny search."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from helpers import ROOT
from hydra_plugins.mnist_logreg.optuna_sweeper import OptunaSweeper, distribution, quoted
from mnist_logreg.callbacks.optuna_pruning import OptunaPruning, TrialPruned
from mnist_logreg.sweeps.study import FOLD_STEP, FOLD_VALUES, JOB_DIR, JOB_DIRS, RETRY_OF, open_storage
from mnist_logreg.sweeps.summary import read_jobs


def parse(line: str):
    return distribution(OverridesParser.create().parse_override(line))


def test_search_space_from_hydra_override_grammar() -> None:
    assert parse("optimizer.lr=tag(log, interval(1e-4, 1.0))") == FloatDistribution(1e-4, 1.0, log=True)
    assert parse("optimizer.momentum=interval(0.0, 0.95)") == FloatDistribution(0.0, 0.95)
    assert parse("trainer.max_epochs=range(1, 9)") == IntDistribution(1, 8)
    assert parse("trainer.max_epochs=range(2, 11, 2)") == IntDistribution(2, 10, step=2)
    assert parse("data.batch_size=choice(100, 500)") == CategoricalDistribution([100, 500])
    assert parse("optimizer=choice(sgd, adam)") == CategoricalDistribution(["sgd", "adam"])


def job_dir_of(sweeper: OptunaSweeper):
    """The job directory a composed config would give: the sweep dir and the subdir the sweeper set."""

    def compose(overrides: list[str]) -> Path:
        (subdir,) = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.subdir=")]
        return Path(sweeper.config.hydra.sweep.dir) / subdir

    return compose


class FakeLauncher:
    """Returns what the wrapped task would: a score, None for a job that failed, or a raised exception."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[list[str]]]] = []

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append((initial_job_idx, batch))
        returns = []
        for overrides in batch:
            params = dict(o.split("=", 1) for o in overrides)
            lr = float(params["optimizer.lr"])
            if lr > 0.3:
                returns.append(JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("diverged")))
            elif params["data.batch_size"] == "200":
                returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=None))
            else:
                returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=lr))
        return returns


def test_failed_trials_do_not_stop_the_search_and_the_best_is_reported(tmp_path: Path, monkeypatch) -> None:
    sweeper = OptunaSweeper(
        n_trials=7,
        n_jobs=3,
        sampler=optuna.samplers.RandomSampler(seed=1),
        params={
            "optimizer.lr": "tag(log, interval(1e-3, 1.0))",
            "optimizer.momentum": "interval(0.0, 0.9)",  # not in this config: left out of the search
            "data.batch_size": "choice(100, 200)",
        },
    )
    sweeper.config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(tmp_path)}},
            "optimized_metric": "val/acc",
            "optimizer": {"lr": 0.001},  # like Adam's: no momentum
            "data": {"batch_size": 100},
        }
    )
    sweeper.hydra_context = HydraContext(config_loader=None, callbacks=None)
    sweeper.launcher = launcher = FakeLauncher()
    monkeypatch.setattr(sweeper, "_compose_job", job_dir_of(sweeper))

    sweeper.sweep(["hparams_search=optuna", "trainer.max_epochs=1"])

    assert [(start, len(batch)) for start, batch in launcher.batches] == [(0, 3), (3, 3), (6, 1)]
    jobs = [overrides for _, batch in launcher.batches for overrides in batch]
    assert all(o[:2] == ["hparams_search=optuna", "trainer.max_epochs=1"] for o in jobs)
    # Each job is told its trial, and has the trial's number for its directory: unique in the study.
    storage = tmp_path / "study.journal"  # paths and names that read as words go unquoted
    name = f"lr+batch_size_{tmp_path.name}"  # what the study searched, then the sweep dir's name (its time)
    for number, o in enumerate(jobs):
        assert o[4:] == [
            f"+trial.study_name={quoted(name)}",
            f"+trial.storage={storage}",
            f"+trial.number={number}",
            f"hydra.sweep.subdir={number}",
        ]
    scores = {
        i: float(o[2].split("=")[1])
        for i, o in enumerate(jobs)
        if float(o[2].split("=")[1]) <= 0.3 and o[3] != "data.batch_size=200"
    }
    assert len(scores) < len(jobs)  # some trials failed and the search went on
    best_job = max(scores, key=scores.get)
    best = OmegaConf.load(tmp_path / "best_params.yaml")
    assert best.best_value == scores[best_job] and best.trial == best_job and best.metric == "val/acc"
    assert best.job_dir == str(tmp_path / str(best_job)) and best.study == name
    assert [f"{k}={v}" for k, v in best.best_params.items()] == jobs[best_job][2:4]
    assert best.command == " ".join(["python train.py trainer.max_epochs=1", *jobs[best_job][2:4]])
    assert best.trials == {"completed": len(scores), "total": 7}
    # The study is kept in the sweep dir, whose report reads it (tests/test_study.py).
    study = optuna.load_study(study_name=name, storage=open_storage(str(tmp_path / "study.journal")))
    assert len(study.trials) == 7 and "RUNNING" not in {t.state.name for t in study.trials}
    assert study.metric_names == ["val/acc"]  # optuna-dashboard's name for the value, not "Objective 0"


@pytest.mark.slow
def test_a_tiny_optuna_search_on_mnist(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=3",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=20", "callbacks.progress_bar.refresh_rate=0",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    best = OmegaConf.load(sweep / "best_params.yaml")
    assert best.metric == "val/acc" and best.best_value == float(rows[0]["val/acc"])  # never test/acc
    assert str(best.trial) == rows[0]["trial"] and best.job_dir == str(sweep / rows[0]["directory"])
    assert set(best.best_params) == {
        "optimizer.lr",
        "optimizer.momentum",
        "optimizer.weight_decay",
        "data.batch_size",
    }
    # The best parameters are the ones the best job ran with, as its own directory records them.
    ran_with = OmegaConf.load(Path(best.job_dir) / ".hydra" / "overrides.yaml")
    for key, value in best.best_params.items():
        assert rows[0][key] == str(value)
        assert f"{key}={value}" in ran_with
    assert f"Best trial: val/acc {best.best_value:.4f}" in result.stdout + result.stderr
    plots = {p.name for p in (sweep / "plots").glob("*.png")}  # Optuna's, and the metric per parameter
    assert {"optuna_history.png", "optuna_importances.png", "val_acc_vs_optimizer.lr.png"} <= plots


class StoppedLauncher(FakeLauncher):
    """The second batch is stopped by SIGTERM, as a job training in the sweeper's process ends on one."""

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        if self.batches:
            raise SystemExit(143)
        return super().launch(batch, initial_job_idx)


def test_a_stopped_worker_tells_its_running_trials_failed_and_says_how_to_go_on(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    storage = str(tmp_path / "search.journal")
    sweeper = OptunaSweeper(
        n_trials=4,
        n_jobs=2,
        sampler=optuna.samplers.RandomSampler(seed=1),
        storage=storage,
        study_name="stopped",
        params={"optimizer.lr": "tag(log, interval(1e-3, 0.3))", "data.batch_size": "choice(100, 500)"},
    )
    sweeper.config = OmegaConf.create(
        {
            "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}},
            "optimizer": {"lr": 0.1},
            "data": {"batch_size": 1},
        }
    )
    sweeper.hydra_context = HydraContext(config_loader=None, callbacks=None)
    sweeper.launcher = StoppedLauncher()
    monkeypatch.setattr(sweeper, "_compose_job", job_dir_of(sweeper))
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "hparams_search=optuna"])

    with pytest.raises(SystemExit):
        sweeper.sweep([])
    trials = optuna.load_study(study_name="stopped", storage=open_storage(storage)).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL", "WAITING", "WAITING"]
    assert [t.user_attrs[RETRY_OF] for t in trials[4:]] == [2, 3]  # their parameters, tried again next time
    assert caplog.messages[-1] == (
        "SIGTERM: the search stopped, its running trials told as failed; to go on with the study: "
        "python train.py -m hparams_search=optuna"
    )

    sweeper.launcher = FakeLauncher()  # the same command again: the lost trials first, then no more
    sweeper.sweep([])
    trials = optuna.load_study(study_name="stopped", storage=open_storage(storage)).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2 + ["FAIL"] * 2 + ["COMPLETE"] * 2
    assert [t.params for t in trials[4:]] == [t.params for t in trials[2:4]]


@pytest.mark.slow
def test_on_slurm_trials_run_up_to_the_array_parallelism_at_once() -> None:
    command = [sys.executable, str(ROOT / "train.py"), "hparams_search=optuna", "hydra/launcher=slurm"]
    command += ["--cfg", "hydra", "--resolve", "-p", "hydra.sweeper.n_jobs"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "64", run.stderr[
        -2000:
    ]  # conf/hydra/launcher/slurm.yaml's array_parallelism


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"pruner": "mediam"},
            "hydra.sweeper.pruner=mediam is not a pruner: use median or hyperband, or null",
        ),
        (
            {"storage": "x.db", "study_name": "a"},
            "use sqlite:///x.db (one machine), postgresql://host/db, or",
        ),
        ({"storage": "sqlite:///x.db"}, "add hydra.sweeper.study_name=<name>"),
    ],
)
def test_a_bad_search_option_is_one_line_and_nothing_runs(options, message, tmp_path: Path, caplog) -> None:
    sweeper = OptunaSweeper(**options)
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    with pytest.raises(SystemExit) as exit:
        sweeper.sweep([])
    assert exit.value.code == 2 and len(caplog.messages) == 1 and message in caplog.messages[0]
    assert not (tmp_path / "sweep").exists()


class FoldLauncher(FakeLauncher):
    """Fold f of a trial scores lr + f / 100 and leaves its record; fold 1 of trial 2 fails."""

    def __init__(self, sweep_dir: Path) -> None:
        super().__init__()
        self.sweep_dir = sweep_dir

    def launch(self, batch: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
        self.batches.append((initial_job_idx, batch))
        returns = []
        for overrides in batch:
            params = dict(o.split("=", 1) for o in overrides)
            lr, fold, trial = float(params["optimizer.lr"]), int(params["data.fold"]), params["+trial.number"]
            job_dir = self.sweep_dir / params["hydra.sweep.subdir"].strip("'")
            job_dir.mkdir(parents=True)
            if trial == "2" and fold == 1:
                record = {"status": "failed", "error": "diverged"}
                returns.append(JobReturn(status=JobStatus.FAILED, _return_value=RuntimeError("diverged")))
            else:
                record = {"status": "completed", "val/acc": lr + fold / 100, "fold": fold}
                returns.append(JobReturn(status=JobStatus.COMPLETED, _return_value=lr + fold / 100))
            (job_dir / "metrics.json").write_text(json.dumps(record))
        return returns


def fold_sweeper(tmp_path: Path, monkeypatch, **options) -> OptunaSweeper:
    sweeper = OptunaSweeper(
        sampler=optuna.samplers.RandomSampler(seed=1),
        params={"optimizer.lr": "tag(log, interval(1e-3, 1.0))"},
        **options,
    )
    sweeper.config = OmegaConf.create(
        {"hydra": {"sweep": {"dir": str(tmp_path)}}, "optimized_metric": "val/acc", "optimizer": {"lr": 0.1}}
    )
    sweeper.hydra_context = HydraContext(config_loader=None, callbacks=None)
    sweeper.launcher = FoldLauncher(tmp_path)

    def compose(overrides: list[str]) -> Path:
        (subdir,) = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.subdir=")]
        return tmp_path / subdir.strip("'")

    monkeypatch.setattr(sweeper, "_compose_job", compose)
    return sweeper


def test_a_search_over_folds_launches_each_trials_folds_together_and_tells_their_mean(
    tmp_path: Path, monkeypatch
) -> None:
    sweeper = fold_sweeper(tmp_path, monkeypatch, n_trials=4, n_jobs=6, folds=3)
    sweeper.sweep(["trainer.max_epochs=1"])

    launcher = sweeper.launcher
    assert [(start, len(batch)) for start, batch in launcher.batches] == [(0, 6), (6, 6)]  # 2 trials a batch
    jobs = [overrides for _, batch in launcher.batches for overrides in batch]
    for index, overrides in enumerate(jobs):
        number, fold = divmod(index, 3)  # a trial's folds side by side, each in the trial's own folder
        assert overrides[2:4] == ["data.folds=3", f"data.fold={fold}"]
        assert (
            f"+trial.number={number}" in overrides
            and overrides[-1] == f"hydra.sweep.subdir='{number}/{fold}'"
        )
    name = str(OmegaConf.load(tmp_path / "study.yaml").study_name)
    study = optuna.load_study(study_name=name, storage=open_storage(str(tmp_path / "study.journal")))
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    for trial in study.trials:
        lr = trial.params["optimizer.lr"]
        assert trial.user_attrs[JOB_DIR] == str(tmp_path / str(trial.number))
        assert trial.user_attrs[JOB_DIRS] == [str(tmp_path / f"{trial.number}/{fold}") for fold in range(3)]
        if trial.state.name == "COMPLETE":
            assert trial.value == pytest.approx(lr + 0.01)  # the mean of lr, lr + 0.01, lr + 0.02
            assert trial.user_attrs[FOLD_VALUES] == pytest.approx([lr, lr + 0.01, lr + 0.02])
    best = OmegaConf.load(tmp_path / "best_params.yaml")
    assert best.command.endswith(" -m data.folds=3 'data.fold=range(3)'")
    # The summary has a row per trial: the folds' mean, or the fold that failed.
    rows = {job.name: job for job in read_jobs(tmp_path)}
    for trial in study.trials:
        row = rows[str(trial.number)]
        if trial.state.name == "FAIL":
            assert row.status == "failed" and row.error == "fold 1: diverged"
        else:
            assert row.metrics["val/acc"] == pytest.approx(trial.value) and row.metrics["folds"] == 3
            assert row.directory == str(trial.number)


@pytest.mark.parametrize(
    ("options", "arguments", "message"),
    [
        ({"folds": 1}, [], "hydra.sweeper.folds=1 is invalid: it must be a whole number >= 2"),
        ({"folds": 3, "pruner": "hyperband"}, [], "hydra.sweeper.folds=3 works with pruner=median or null"),
        ({"folds": 3}, ["data.fold=0"], "sets data.folds and data.fold for each job: leave data.fold out"),
    ],
)
def test_impossible_fold_searches_are_refused_in_one_line(
    tmp_path: Path, monkeypatch, caplog, options, arguments, message
) -> None:
    sweeper = fold_sweeper(tmp_path, monkeypatch, **options)
    with pytest.raises(SystemExit) as exit:
        sweeper.sweep(arguments)
    assert exit.value.code == 2 and message in caplog.messages[-1]
    assert not sweeper.launcher.batches


def test_a_fold_is_pruned_on_its_own_values_not_on_the_trials_best_fold(tmp_path: Path) -> None:
    storage = str(tmp_path / "search.journal")
    study = optuna.create_study(study_name="folds", storage=open_storage(storage), direction="maximize")
    for fold0, fold1 in ((0.90, 0.50), (0.92, 0.52)):  # fold 1 is harder for every trial
        values = {0: fold0, FOLD_STEP: fold1}
        study.add_trial(optuna.trial.create_trial(value=(fold0 + fold1) / 2, intermediate_values=values))
    number = study.ask().number

    def validate(fold: int, value: float) -> None:
        pruning = OptunaPruning(storage, "folds", number, pruner="median", fold=fold)
        trainer = SimpleNamespace(
            is_global_zero=True,
            sanity_checking=False,
            callback_metrics={"val/acc": torch.tensor(value)},
            current_epoch=0,
            global_step=10,
            strategy=SimpleNamespace(broadcast=lambda decision: decision),
        )
        pruning.setup(trainer, None, "fit")
        pruning.on_validation_end(trainer, None)

    validate(0, 0.95)  # above fold 0's median (0.91): goes on
    # 0.49 is below fold 1's median (0.51). Optuna's own should_prune would judge the trial by its best value
    # over all its steps (fold 0's 0.95) and let it go on.
    with pytest.raises(TrialPruned, match=r"^Pruned by Optuna after epoch 1: val/acc 0\.4900$"):
        validate(1, 0.49)
    trial = optuna.load_study(study_name="folds", storage=open_storage(storage)).trials[number]
    assert trial.intermediate_values == {0: pytest.approx(0.95), FOLD_STEP: pytest.approx(0.49)}
