"""Sweeps: the summary (failed jobs included), the exit status, parallel jobs, never-colliding directories."""

from __future__ import annotations

import csv
import json
import logging
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from mlflow import MlflowClient
from omegaconf import OmegaConf

from helpers import ROOT, hparams_row
from mnist_logreg.errors import UserError
from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.training import train
from mnist_logreg.sweeps.__main__ import main
from mnist_logreg.sweeps.study import ERROR, JOB_DIR, RETRY_OF, open_storage
from mnist_logreg.sweeps.summary import (
    NOT_FINISHED,
    Job,
    Range,
    SweepSummary,
    edges,
    read_jobs,
    sort_best_first,
)

SHORT = ("trainer.max_epochs=1", "+trainer.limit_train_batches=20", "callbacks.progress_bar.refresh_rate=0")


def make_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    """A job directory as Hydra and `pipeline.train` leave it (no metrics.json: the job was killed)."""
    (sweep_dir / name / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), sweep_dir / name / ".hydra" / "overrides.yaml")
    if metrics is not None:
        (sweep_dir / name / "metrics.json").write_text(json.dumps(metrics))


def end_sweep(sweep_dir: Path, **kwargs) -> int:
    """Run the callback as Hydra does at the end of a multirun; the exit status it asks for."""
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    try:
        SweepSummary(**kwargs).on_multirun_end(config=config)
    except SystemExit as exit:
        return int(exit.code)
    return 0


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def completed(val_acc: float, test_acc: float) -> dict:
    return {
        "status": "completed",
        "val/acc": val_acc,
        "test/acc": test_acc,
        "test/loss": 0.3,
        "fit_time_s": 2.0,
    }


def test_summary_rows_best_first_then_failed_jobs_with_their_reason(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    sweep = tmp_path / "sweep"
    make_job(sweep, "0", ["optimizer.lr=0.001", "trainer.max_epochs=1"], completed(0.80, 0.81))
    make_job(sweep, "1", ["optimizer.lr=-1", "trainer.max_epochs=1"], {"status": "failed", "error": "bad lr"})
    make_job(sweep, "2", ["optimizer.lr=0.1", "trainer.max_epochs=1"], completed(0.91, 0.90))
    make_job(sweep, "3", ["optimizer.lr=1", "trainer.max_epochs=1"], None)
    make_job(sweep, "10", ["optimizer.lr=0.01", "trainer.max_epochs=1"], completed(0.91, 0.92))

    assert end_sweep(sweep, metric="val/acc", mode="max") == 1  # a failed job fails the sweep

    rows = read_csv(sweep / "summary.csv")
    assert list(rows[0]) == [
        "job", "optimizer.lr", "trainer.max_epochs", "status",
        "val/acc", "test/acc", "test/loss", "fit_time_s", "error", "directory",
    ]  # fmt: skip
    # Best first; a tie keeps job order (2 before 10, not "10" < "2"); failed jobs last, in job order.
    assert [r["job"] for r in rows] == ["2", "10", "0", "1", "3"]
    assert [r["status"] for r in rows] == ["completed"] * 3 + ["failed"] * 2
    assert [r["error"] for r in rows[3:]] == ["bad lr", NOT_FINISHED]
    assert rows[0]["optimizer.lr"] == "0.1" and float(rows[0]["val/acc"]) == 0.91
    assert rows[3]["val/acc"] == ""

    summary = (sweep / "summary.md").read_text()
    assert "5 jobs, best first by `val/acc` (higher is better); 2 failed." in summary
    assert "Every job: `trainer.max_epochs=1`." in summary  # common overrides are not a column
    assert (
        "| job | optimizer.lr | status | val/acc | test/acc | test/loss | fit time (s) | error |" in summary
    )
    assert "| 2 | 0.1 | completed | 0.9100 | 0.9000 | 0.3000 | 2.0 |  |" in summary
    assert "| 1 | -1 | failed |  |  |  |  | bad lr |" in summary
    assert (
        "Best job 2 (optimizer.lr=0.1 trainer.max_epochs=1): val/acc 0.9100, test/acc 0.9000" in caplog.text
    )
    assert "2 of 5 jobs failed (job 1: bad lr)" in caplog.text


def test_a_search_may_lose_trials_but_not_all(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    make_job(sweep, "0", ["optimizer.lr=9"], {"status": "failed", "error": "diverged"})
    make_job(sweep, "1", ["optimizer.lr=0.1"], completed(0.9, 0.9))
    assert end_sweep(sweep, allow_failed_jobs=True) == 0
    assert [r["job"] for r in read_csv(sweep / "summary.csv")] == ["1", "0"]
    (sweep / "1" / "metrics.json").unlink()
    assert end_sweep(sweep, allow_failed_jobs=True) == 1


def test_lower_is_better_for_a_loss(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name, loss in (("0", 0.5), ("1", 0.2), ("2", 0.9)):
        make_job(sweep, name, [f"seed={name}"], {**completed(0.9, 0.9), "val/loss": loss})
    assert end_sweep(sweep, metric="val/loss", mode="min") == 0
    rows = read_csv(sweep / "summary.csv")
    assert [r["job"] for r in rows] == ["1", "0", "2"]
    assert list(rows[0])[3] == "val/loss"  # the optimised metric comes first when not a standard column


def test_a_failed_job_in_a_multirun_is_recorded_and_returns(compose_train, tmp_path: Path) -> None:
    compose_train("hydra.mode=MULTIRUN")
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    output_dir.mkdir(parents=True)

    @report_user_errors
    def task(cfg) -> float:
        raise ValueError("Invalid learning rate: -1\nmore detail")

    assert task(None) is None  # returned, so the launcher goes on and the summary gets written
    assert json.loads((output_dir / "metrics.json").read_text()) == {
        "status": "failed",
        "error": "ValueError: Invalid learning rate: -1",
    }


def test_a_user_error_wrapped_by_instantiate_is_still_one_line(compose_train, caplog) -> None:
    compose_train()  # a single run

    @report_user_errors
    def task(cfg) -> float:
        try:
            raise UserError("data.batch_size=0 is invalid: it must be a whole number >= 1.")
        except UserError as error:
            raise InstantiationException("Error in call to target 'MNISTDataModule'") from error

    with pytest.raises(SystemExit) as exit:
        task(None)
    assert exit.value.code == 2
    assert caplog.messages == ["data.batch_size=0 is invalid: it must be a whole number >= 1."]


@pytest.mark.slow
def test_runs_started_together_get_their_own_directories() -> None:
    """Run directories are named to the microsecond: runs started side by side never share one."""
    command = [sys.executable, str(ROOT / "train.py"), "--cfg", "hydra", "-p", "hydra.run.dir"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for _ in range(4)
    ]
    dirs = [process.communicate(timeout=60)[0].strip() for process in processes]
    assert all(d.startswith("logs/runs/") for d in dirs), dirs
    assert len(set(dirs)) == 4, dirs


def run_sweep(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, str(ROOT / "train.py"), "-m", *overrides]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """Three jobs on MNIST, one of them with a learning rate the config check refuses."""
    sweep = tmp_path_factory.mktemp("basic") / "sweep"
    return sweep, run_sweep("optimizer.lr=0.5,-1,0.05", *SHORT, f"hydra.sweep.dir={sweep}")


@pytest.mark.slow
def test_every_job_of_a_sweep_has_its_hparams_row_with_its_status(basic_sweep) -> None:
    sweep, _ = basic_sweep
    rows = {job.name: hparams_row(job / "tensorboard") for job in sorted(sweep.glob("[0-9]_*"))}
    assert [values["status"] for values, *_ in rows.values()] == ["completed", "failed", "completed"]
    for name, (_, session, experiment, _) in rows.items():
        assert session.group_name == name  # the Trial ID: the job's directory, not a cut path
        # The swept key and the status first: TensorBoard puts the columns marked as differing first.
        assert {info.name for info in experiment.hparam_infos if info.differs} == {"status", "optimizer/lr"}
    assert [values["optimizer/lr"] for values, *_ in rows.values()] == [
        0.5,
        -1,
        0.05,
    ]  # the refused one too


@pytest.mark.slow
def test_a_sweep_with_a_failed_job_runs_the_rest_writes_the_summary_and_fails(basic_sweep) -> None:
    sweep, result = basic_sweep
    assert result.returncode == 1, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "1 of 3 jobs failed (job 1: optimizer.lr=-1 is invalid" in output
    assert "Best job" in output
    # A quiet multirun (its output is a pipe here): the config tree once, no model summary per job.
    assert output.count("Config (each job adds its own overrides)") == 1 and output.count("├── seed:") == 1
    assert "Total params" not in output and "GPU available" not in output

    rows = read_csv(sweep / "summary.csv")
    assert [r["optimizer.lr"] for r in rows][2] == "-1"
    assert [r["status"] for r in rows] == ["completed", "completed", "failed"]
    assert float(rows[0]["val/acc"]) >= float(rows[1]["val/acc"]) > 0.5
    for row in rows:
        metrics = json.loads((sweep / row["directory"] / "metrics.json").read_text())
        assert metrics["status"] == row["status"]
        if row["status"] == "completed":
            assert (
                float(row["val/acc"]) == metrics["val/acc"] and float(row["test/acc"]) == metrics["test/acc"]
            )
            assert float(row["test/loss"]) == metrics["test/loss"] and metrics["steps"] == 20
    assert "optimizer.lr=-1 is invalid" in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_joblib_runs_jobs_in_parallel_with_the_same_outputs(basic_sweep, tmp_path: Path) -> None:
    """...and both jobs create and write to one new MLflow store at the same time, and plots are drawn."""
    sweep = tmp_path / "sweep"
    result = run_sweep(
        "optimizer.lr=0.5,0.05",
        *SHORT,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "logger=tensorboard_mlflow",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    rows = {r["optimizer.lr"]: r for r in read_csv(sweep / "summary.csv")}
    basic = {r["optimizer.lr"]: r for r in read_csv(basic_sweep[0] / "summary.csv")}
    assert set(rows) == {"0.5", "0.05"} and {r["job"] for r in rows.values()} == {"0", "1"}
    for lr, row in rows.items():
        job = sweep / row["directory"]
        assert job.name.startswith(f"{row['job']}_") and f"lr-{lr}" in job.name  # named by its overrides
        assert json.loads((job / "metrics.json").read_text())["status"] == "completed"
        assert not (job / "tensorboard" / "hparams").exists()  # one TensorBoard run per job
        # The same seeded runs as the basic launcher's; one thread per worker may round differently.
        for name in ("val/acc", "test/acc"):
            assert float(row[name]) == pytest.approx(float(basic[lr][name]), abs=2e-3)

    client = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    expected = sorted(f"{sweep.name}/{row['directory']}" for row in rows.values())  # <sweep>/<job dir>
    assert sorted(run.info.run_name for run in runs) == expected
    for run in runs:
        row = rows[run.data.params["optimizer/lr"]]
        assert run.info.status == "FINISHED" and run.data.tags["sweep"] == sweep.name
        assert run.data.metrics["val/acc_best"] == float(row["val/acc"])
    # The metric against the swept parameter, one point per job (tests/test_sweep_plots.py: the drawing).
    assert (sweep / "plots" / "val_acc_vs_optimizer.lr.png").is_file()


@pytest.mark.slow
def test_the_tuned_experiment_reaches_92_6_percent(compose_train) -> None:
    metrics = train(compose_train("experiment=tuned", "callbacks.progress_bar.refresh_rate=0"))
    assert metrics["test/acc"] >= 0.926 and metrics["steps"] == 20 * 55


def test_a_grid_over_seeds_gets_a_row_per_configuration_with_mean_and_std(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    accs = {"0.01": (0.80, 0.82, 0.84), "0.1": (0.90, 0.91, 0.89)}
    for lr, values in accs.items():
        for seed, acc in enumerate(values, start=1):
            make_job(
                sweep,
                f"{len(list(sweep.glob('*')))}",
                [f"seed={seed}", f"optimizer.lr={lr}"],
                completed(acc, acc),
            )
    make_job(sweep, "6", ["seed=4", "optimizer.lr=0.1"], {"status": "failed", "error": "diverged"})
    assert end_sweep(sweep, allow_failed_jobs=True) == 0
    summary = (sweep / "summary.md").read_text()
    table = summary[summary.index("## Over seeds") : summary.index("## The best against")].splitlines()
    assert "| optimizer.lr | seeds | val/acc (mean ± std) | test/acc (mean ± std) |" in table
    rows = [line for line in table if line.startswith("| 0.")]
    assert rows == [  # best mean first; the failed seed counted as run, not as completed
        "| 0.1 | 3 of 4 | 0.9000 ± 0.0100 | 0.9000 ± 0.0100 |",
        "| 0.01 | 3 of 3 | 0.8200 ± 0.0200 | 0.8200 ± 0.0200 |",
    ]


# The hand-worked example of test_comparison.py: A and B on five folds (C as close to A as noise).
FOLD_ACCS = {
    "A": (0.91, 0.92, 0.90, 0.93, 0.94),
    "B": (0.90, 0.90, 0.89, 0.92, 0.91),
    "C": (0.92, 0.91, 0.92, 0.91, 0.92),
}
LRS = {"A": "0.1", "B": "0.01", "C": "0.05"}


def make_fold_sweep(sweep: Path, configs: str = "ABC", seed: int = 0) -> None:
    """`python train.py -m optimizer.lr=... data.folds=5 'data.fold=range(5)'` as its jobs leave it."""
    for name in configs:
        for fold, acc in enumerate(FOLD_ACCS[name]):
            overrides = [f"optimizer.lr={LRS[name]}", "data.folds=5", f"data.fold={fold}"]
            identity = {"seed": seed, "folds": 5, "fold": fold}
            make_job(sweep, f"{len(list(sweep.glob('*')))}", overrides, {**completed(acc, 0.9), **identity})


def test_a_sweep_over_folds_is_summarised_per_configuration_and_compared_fold_by_fold(tmp_path: Path) -> None:
    make_fold_sweep(tmp_path)
    assert end_sweep(tmp_path) == 0
    summary = (tmp_path / "summary.md").read_text()
    over = summary[summary.index("## Over folds") : summary.index("## The best against")].splitlines()
    assert "| optimizer.lr | folds | val/acc (mean ± std) | test/acc (mean ± std) |" in over
    assert [line for line in over if line.startswith("| 0.")] == [
        "| 0.1 | 5 of 5 | 0.9200 ± 0.0158 | 0.9000 ± 0.0000 |",
        "| 0.05 | 5 of 5 | 0.9160 ± 0.0055 | 0.9000 ± 0.0000 |",
        "| 0.01 | 5 of 5 | 0.9040 ± 0.0114 | 0.9000 ± 0.0000 |",
    ]
    paired = summary[summary.index("## The best against") :].splitlines()
    assert [line for line in paired if line.startswith("| 0.")] == [
        # A - C = -0.01 0.01 -0.02 0.02 0.02: mean 0.004; squares of (d - mean) sum to 1320e-6,
        # sd = sqrt(330e-6) = 0.018166, se = 0.008124, half width 2.7764 * se = 0.022556.
        "| 0.05 | 5 | +0.0040 [-0.0186, +0.0266] | cannot be told apart (the interval contains 0) |",
        "| 0.01 | 5 | +0.0160 [+0.0049, +0.0271] | the best is higher than this |",  # the hand-worked one
    ]


def test_seeds_and_folds_together_make_the_replicates_paired_by_both(tmp_path: Path) -> None:
    for seed in (1, 2):
        for fold in (0, 1):
            for lr, acc in (("0.1", 0.90 + 0.01 * fold + 0.001 * seed), ("0.01", 0.85 + 0.01 * fold)):
                overrides = [f"seed={seed}", f"optimizer.lr={lr}", "data.folds=2", f"data.fold={fold}"]
                identity = {"seed": seed, "folds": 2, "fold": fold}
                make_job(
                    tmp_path,
                    str(len(list(tmp_path.glob("*")))),
                    overrides,
                    {**completed(acc, acc), **identity},
                )
    assert end_sweep(tmp_path) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "## Over seeds and folds" in summary
    assert "| optimizer.lr | seeds and folds | val/acc (mean ± std) | test/acc (mean ± std) |" in summary
    # 4 pairs; every difference is 0.05 + 0.001 * seed: mean 0.0515, a narrow interval clear of 0.
    assert "| 0.01 | 4 | +0.0515 [+0.0506, +0.0524] | the best is higher than this |" in summary


def test_compare_two_sweeps_on_their_shared_folds(tmp_path: Path, capsys) -> None:
    make_fold_sweep(tmp_path / "a", "A")
    make_fold_sweep(tmp_path / "b", "BC")  # B's best is C; A and C cannot be told apart
    main(["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"A: {tmp_path / 'a'} (optimizer.lr=0.1 data.folds=5): val/acc 0.9200 ± 0.0158 over 5 runs",
        f"B: {tmp_path / 'b'} (optimizer.lr=0.05 data.folds=5, the best of 2 configurations): "
        "val/acc 0.9160 ± 0.0055 over 5 runs",
        "A - B, val/acc, paired on 5 shared seeds and folds: +0.0040 [-0.0186, +0.0266] (95% interval, "
        "paired t): cannot be told apart (the interval contains 0)",
    ]
    # Other seeds share no replicate with A: refused in one line, exit 2.
    make_fold_sweep(tmp_path / "c", "B", seed=1)
    with pytest.raises(SystemExit) as exit:
        main(["compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert exit.value.code == 2
    assert "share fewer than 2 completed seeds or folds, so they cannot be paired" in capsys.readouterr().err


@pytest.mark.slow
def test_a_3_fold_multirun_on_mnist_is_summarised_over_its_folds(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_sweep(
        "data.folds=3",
        "data.fold=range(3)",
        "optimizer.lr=0.5",
        "test=false",
        *SHORT,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = {}
    for fold in range(3):
        (job_dir,) = sweep.glob(f"{fold}_*")
        assert f"fold-{fold}+folds-3" in job_dir.name  # the run's name says its fold
        records[fold] = json.loads((job_dir / "metrics.json").read_text())
        assert (records[fold]["folds"], records[fold]["fold"], records[fold]["seed"]) == (3, fold, 0)
        assert records[fold]["status"] == "completed" and records[fold]["steps"] == 20
    accs = [records[fold]["val/acc"] for fold in range(3)]
    assert len(set(accs)) == 3 and all(0.5 < acc < 1 for acc in accs)  # three validation splits
    summary = (sweep / "summary.md").read_text()
    mean, std = statistics.fmean(accs), statistics.stdev(accs)
    assert "## Over folds" in summary and f"| 3 of 3 | {mean:.4f} ± {std:.4f} |" in summary


def test_a_best_value_at_the_edge_of_its_range_is_said_with_the_next_range(tmp_path: Path, caplog) -> None:
    grid = {"0.001": 0.70, "0.01": 0.85, "0.1": 0.90}  # best at the top of a log grid
    for i, (lr, acc) in enumerate(grid.items()):
        make_job(
            tmp_path / "top",
            str(i),
            [f"optimizer.lr={lr}", f"data.batch_size={100 * (i + 1)}"],
            completed(acc, acc),
        )
    edge, batch_edge = edges(sort_best_first(read_jobs(tmp_path / "top"), "val/acc", "max"), "val/acc")
    assert batch_edge.key == "data.batch_size" and batch_edge.side == "top"
    assert (edge.key, edge.side, edge.suggestion()) == ("optimizer.lr", "top", "optimizer.lr=0.01,0.1,1")
    caplog.set_level(logging.INFO)
    assert end_sweep(tmp_path / "top") == 0
    expected = (
        "optimizer.lr: the best value, 0.1, is at the top of the range swept (0.001 to 0.1), so the optimum "
        "may lie beyond it; try optimizer.lr=0.01,0.1,1"
    )
    assert expected in caplog.messages and f"- {expected}" in (tmp_path / "top" / "summary.md").read_text()
    # data.batch_size (100, 200, 300) is at its top too: extended by half its width, as integers.
    assert "try data.batch_size=200,300,400" in caplog.text

    for i, (lr, acc) in enumerate({"0.001": 0.8, "0.01": 0.9, "0.1": 0.85}.items()):
        make_job(tmp_path / "inside", str(i), [f"optimizer.lr={lr}"], completed(acc, acc))
    for i, (lr, acc) in enumerate({"0.01": 0.8, "0.1": 0.9}.items()):  # two values: always at an edge
        make_job(tmp_path / "two", str(i), [f"optimizer.lr={lr}"], completed(acc, acc))
    for name in ("inside", "two"):
        assert edges(sort_best_first(read_jobs(tmp_path / name), "val/acc", "max"), "val/acc") == []

    # An Optuna dimension: its bounds, give or take 5% of its width (on its log scale).
    searched = Job("3", {"optimizer.lr": "0.9", "optimizer.momentum": "0.01"}, "completed",
                   metrics={"val/acc": 0.9}, trial=True, directory="3",
                   ranges={"optimizer.lr": Range(1e-4, 1.0, True, False),
                           "optimizer.momentum": Range(0.0, 0.95, False, False)})  # fmt: skip
    (lr_edge, momentum_edge) = edges([searched], "val/acc")
    assert lr_edge.suggestion() == "'optimizer.lr=tag(log, interval(0.09, 9))'" and lr_edge.side == "top"
    assert (
        momentum_edge.side == "bottom"
        and momentum_edge.suggestion() == "'optimizer.momentum=interval(0, 0.485)'"
    )


def test_an_optuna_sweep_is_reported_from_its_study_every_worker_and_state(tmp_path: Path) -> None:
    """The rows are the study's trials, wherever their jobs ran; states as the study has them."""
    import optuna
    from optuna.distributions import FloatDistribution

    storage = str(tmp_path / "study.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(storage), direction="maximize")
    study.set_user_attr("metric", "val/acc")
    space = {"optimizer.lr": FloatDistribution(1e-4, 1.0, log=True)}
    elsewhere = tmp_path / "other_worker"
    outcomes = [  # (job directory, metrics.json, state)
        (elsewhere / "0", completed(0.90, 0.91), "complete"),
        (
            tmp_path / "sweep" / "1",
            {"status": "pruned", "error": "Pruned", "val/acc": 0.5, "epochs": 1},
            "pruned",
        ),
        (tmp_path / "sweep" / "2", None, "lost"),
        (None, None, "uncomposable"),
        (tmp_path / "sweep" / "4", None, "running"),
    ]
    for directory, metrics, state in outcomes:
        trial = study.ask(space)
        if directory is not None:
            trial.set_user_attr(JOB_DIR, str(directory))
            make_job(
                directory.parent, directory.name, [f"optimizer.lr={trial.params['optimizer.lr']}"], metrics
            )
        if state == "complete":
            study.tell(trial, 0.90)
        elif state == "pruned":
            trial.report(0.5, step=0)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif state == "uncomposable":
            trial.set_user_attr(ERROR, "cannot be composed: no momentum")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif state == "lost":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial(study.trials[2].params, user_attrs={RETRY_OF: 2})
    (tmp_path / "sweep" / "study.yaml").write_text(f"storage: {storage}\nstudy_name: s\n")

    assert end_sweep(tmp_path / "sweep", allow_failed_jobs=True) == 0
    rows = read_csv(tmp_path / "sweep" / "summary.csv")
    statuses = ["completed", "pruned", "failed", "failed", "running", "waiting"]
    assert [(r["trial"], r["status"]) for r in rows] == [(str(i), s) for i, s in enumerate(statuses)]
    assert rows[0]["directory"] == str(elsewhere / "0") and rows[1]["directory"] == "1"
    assert float(rows[0]["test/acc"]) == 0.91 and float(rows[1]["val/acc"]) == 0.5
    assert rows[2]["error"] == "no metrics.json: its worker or job was killed; tried again as trial 5"
    assert rows[3]["error"] == "cannot be composed: no momentum" and rows[3]["directory"] == ""
    assert float(rows[0]["optimizer.lr"]) == study.trials[0].params["optimizer.lr"]
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "6 trials (1 completed, 1 pruned, 1 running, 1 waiting, 2 failed)" in summary


def made_by(commit: str, modified: bool = False, patch: str = "") -> dict:
    code = {"commit": commit, "branch": "main", "modified": modified}
    return {"provenance": {"code": {**code, **({"patch_sha256": patch} if patch else {})}}}


def test_the_summary_flags_jobs_made_by_other_code_and_keeps_debug_runs_apart(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    clean, other = "a" * 40, "b" * 40
    make_job(sweep, "0", ["optimizer.lr=0.01"], {**completed(0.90, 0.90), **made_by(clean)})
    make_job(sweep, "1", ["optimizer.lr=0.1"], {**completed(0.91, 0.91), **made_by(clean)})
    assert end_sweep(sweep, metric="val/acc", mode="max") == 0
    assert "Made by" not in (sweep / "summary.md").read_text()  # one clean commit: nothing to say

    make_job(sweep, "2", ["optimizer.lr=1"], {**completed(0.92, 0.92), **made_by(other, True, "c" * 64)})
    debug = {"status": "debug", "debug": "fdr", "val/acc": 0.99, **made_by(clean)}
    make_job(sweep, "3", ["optimizer.lr=1", "debug=fdr"], debug)
    assert end_sweep(sweep, metric="val/acc", mode="max") == 0  # a debug run is no failure
    summary = (sweep / "summary.md").read_text()
    jobs = f"{clean[:12]}: jobs 0, 1, 3; {other[:12]} modified (code.patch cccccccc): jobs 2"
    assert f"Made by different code: {jobs}." in summary
    assert "1 debug runs (`debug=...`: smoke tests, not results) are not ranked." in summary
    rows = read_csv(sweep / "summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [
        ("2", "completed"),
        ("1", "completed"),
        ("0", "completed"),
        ("3", "debug"),
    ]
