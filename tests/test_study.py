"""One Optuna study shared by several worker processes: its total, distinct trials, no collisions, a worker
killed outright, pruning, and the report of the whole study.

`start_workers` and `check_shared_study` take any storage: the journal file, SQLite, and a real PostgreSQL
server (`postgres_url` in conftest.py: the URL of a fresh database), the storage meant for many machines.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from helpers import ROOT, hparams_row
from mnist_logreg.sweeps.study import JOB_DIR, RETRY_OF, open_storage

STATUS = {"COMPLETE": "completed", "FAIL": "failed", "PRUNED": "pruned"}
# About a second a trial: one short epoch, one validation batch, no test.
QUICK = (
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=20",
    "+trainer.limit_val_batches=1",
    "test=false",
    "callbacks.progress_bar.refresh_rate=0",
)


def start_workers(
    storage: str, study_name: str, sweep_dirs: list[Path], *overrides: str
) -> list[subprocess.Popen]:
    """One `python train.py -m hparams_search=optuna` worker per sweep dir, all at once, on one study."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna", *QUICK,
        f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={study_name}", *overrides,
    ]  # fmt: skip
    return [
        subprocess.Popen(
            [*command, f"hydra.sweep.dir={sweep_dir}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for sweep_dir in sweep_dirs
    ]


def wait_in_turn(workers: list[subprocess.Popen], timeout_s: float = 240) -> list[int]:
    """The workers' indices in the order they end; each must end with status 0."""
    order: list[int] = []
    deadline = time.monotonic() + timeout_s
    while len(order) < len(workers):
        assert time.monotonic() < deadline, "the workers did not end in time"
        for i, worker in enumerate(workers):
            if i not in order and worker.poll() is not None:
                order.append(i)
        time.sleep(0.1)
    for worker in workers:
        output = worker.stdout.read()
        assert worker.returncode == 0, output[-3000:]
    return order


def job_started(storage: str, study_name: str) -> bool:
    """Whether the study's first trial is running, its job begun (Hydra has written its config)."""
    try:
        trial = load(storage, study_name).trials[0]
    except (KeyError, IndexError):  # no study yet, or no trial
        return False
    return trial.state.name == "RUNNING" and (Path(trial.user_attrs.get(JOB_DIR, "-")) / ".hydra").is_dir()


def load(storage: str, study_name: str) -> optuna.study.Study:
    return optuna.load_study(study_name=study_name, storage=open_storage(storage))


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def check_shared_study(storage: str, tmp_path: Path, n_workers: int = 3, n_trials: int = 6) -> None:
    """`n_workers` workers started together on `storage`, two of them in one sweep dir: the study has its
    `n_trials` finished trials (a worker may finish one it had started: at most `n_workers - 1` more), no two
    alike, none left running, each in its own job directory, and the last worker's summary lists them all."""
    sweep_dirs = [
        tmp_path / "shared",
        tmp_path / "shared",
        *(tmp_path / f"w{i}" for i in range(n_workers - 2)),
    ]
    workers = start_workers(storage, "shared", sweep_dirs, f"hydra.sweeper.n_trials={n_trials}")
    last = sweep_dirs[wait_in_turn(workers)[-1]]

    trials = load(storage, "shared").trials
    states = [t.state.name for t in trials]
    assert n_trials <= len(trials) <= n_trials + n_workers - 1, states
    assert set(states) <= {"COMPLETE", "FAIL"} and "COMPLETE" in states  # none left running
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params)  # each worker's sampler is seeded apart
    job_dirs = [Path(t.user_attrs[JOB_DIR]) for t in trials]
    assert len(set(job_dirs)) == len(trials)  # two workers in one sweep dir, and no two jobs in one directory
    for trial, job_dir in zip(trials, job_dirs, strict=True):  # named by the trial's number
        assert job_dir.parent in {d.resolve() for d in sweep_dirs} and job_dir.name.startswith(
            str(trial.number)
        )
        assert f"+trial.number={trial.number}" in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")
        metrics = json.loads((job_dir / "metrics.json").read_text())
        if trial.state.name == "COMPLETE":
            assert metrics["status"] == "completed" and metrics["val/acc"] == pytest.approx(trial.value)
        else:  # lr up to 1 with momentum up to 0.95 may diverge
            assert metrics["status"] == "failed"
    rows = {int(row["trial"]): row for row in summary_rows(last)}
    assert sorted(rows) == [t.number for t in trials]
    assert [rows[t.number]["status"] for t in trials] == [STATUS[t.state.name] for t in trials]
    completed = [t for t in trials if t.value is not None]
    assert all(float(rows[t.number]["val/acc"]) == pytest.approx(t.value) for t in completed)
    best = max(completed, key=lambda t: t.value)
    assert int(summary_rows(last)[0]["trial"]) == best.number  # best first
    assert OmegaConf.load(last / "best_params.yaml").trial == best.number


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_three_workers_share_one_study(kind: str, tmp_path: Path) -> None:
    storage = str(tmp_path / "search.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'search.db'}"
    check_shared_study(storage, tmp_path)


@pytest.mark.slow
def test_a_worker_killed_in_a_trial_loses_only_that_trial(tmp_path: Path) -> None:
    """SIGKILL to a worker inside its first trial: the next worker fails that trial once the grace period
    has passed without a heartbeat, tries its parameters again, and completes the study."""
    storage = str(tmp_path / "search.journal")
    options = ("hydra.sweeper.n_trials=3", "hydra.sweeper.grace_period_s=2")
    (first,) = start_workers(storage, "killed", [tmp_path / "first"], *options)
    deadline = time.monotonic() + 60
    while not job_started(storage, "killed"):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert [t.state.name for t in load(storage, "killed").trials] == ["RUNNING"]

    (second,) = start_workers(storage, "killed", [tmp_path / "second"], *options)
    wait_in_turn([second])
    trials = load(storage, "killed").trials
    assert trials[0].state.name == "FAIL"
    retry = next(t for t in trials if t.user_attrs.get(RETRY_OF) == 0)
    assert retry.state.name == "COMPLETE" and retry.params == trials[0].params
    assert len(trials) == 4 and "RUNNING" not in {t.state.name for t in trials}  # 3 besides the lost one
    rows = {row["trial"]: row for row in summary_rows(tmp_path / "second")}
    assert rows["0"]["status"] == "failed" and f"tried again as trial {retry.number}" in rows["0"]["error"]
    assert rows["0"]["directory"] == trials[0].user_attrs[JOB_DIR]  # in the first worker's sweep dir
    assert Path(rows["0"]["directory"]).parent == tmp_path / "first"

    # The study reported any time, without running a trial, into a directory of its own.
    report = [
        sys.executable,
        "-m",
        "mnist_logreg.sweeps",
        "--storage",
        storage,
        "--study-name",
        "killed",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run([*report, str(tmp_path / "report")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    columns = ("trial", "status", "val/acc", "error")  # the directories are shown relative to the report's
    assert [[r[c] for c in columns] for r in summary_rows(tmp_path / "report")] == [
        [r[c] for c in columns] for r in summary_rows(tmp_path / "second")
    ]
    assert "| 0 |" in (tmp_path / "report" / "summary.md").read_text()


@pytest.mark.slow
def test_pruned_trials_stop_early_and_are_not_failures(tmp_path: Path) -> None:
    # The study in the sweep dir, not a named storage: its sampler keeps the config's seed, so the same six
    # trials (among them some pruned, some completed) are drawn on every machine.
    sweep = tmp_path / "sweep"
    storage = str(sweep / "study.journal")
    (worker,) = start_workers(
        "null",
        "pruned",
        [sweep],
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.pruner=median",
        "trainer.max_epochs=3",
    )
    wait_in_turn([worker])  # status 0: pruned trials are no failures
    trials = load(storage, "pruned").trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and "COMPLETE" in {t.state.name for t in trials} and len(trials) == 6
    for trial in pruned:
        metrics = json.loads((Path(trial.user_attrs[JOB_DIR]) / "metrics.json").read_text())
        last_epoch = max(trial.intermediate_values)
        assert metrics["status"] == "pruned" and metrics["epochs"] == last_epoch + 1 < 3
        assert metrics["val/acc"] == trial.intermediate_values[last_epoch] == trial.value
        assert metrics["study"] == "pruned" and metrics["trial"] == trial.number
        assert metrics["provenance"]["code"]["commit"] != "unknown"  # what made it, as a completed trial
    for trial in trials:  # every trial reported each epoch it trained
        assert sorted(trial.intermediate_values) == list(range(len(trial.intermediate_values)))
    statuses = [row["status"] for row in summary_rows(sweep)]
    assert statuses == sorted(statuses, key=["completed", "pruned", "failed"].index)  # completed first
    assert f"{len(pruned)} pruned" in (sweep / "summary.md").read_text()
    # Every trial has its row in TensorBoard's HParams table, named by its directory, with its status.
    for trial in trials:
        job = Path(trial.user_attrs[JOB_DIR])
        values, session, _, scores = hparams_row(job / "tensorboard")
        assert values["status"] == {"PRUNED": "pruned", "COMPLETE": "completed"}[trial.state.name]
        assert session.group_name == job.name and scores["hparams/val_acc"] == pytest.approx(trial.value)
    assert load(storage, "pruned").metric_names == ["val/acc"]


@pytest.mark.slow
def test_three_workers_share_one_study_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")  # the driver of the `postgres` extra
    check_shared_study(postgres_url, tmp_path)
