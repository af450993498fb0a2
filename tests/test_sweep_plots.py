"""Sweep plots: the metric against each swept parameter, one point per job, failed jobs marked; Optuna's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
from matplotlib import pyplot as plt
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_logreg.sweeps.plots import SweepPlots, metric_figure, optuna_plots
from mnist_logreg.sweeps.summary import edges, read_jobs, sort_best_first


def make_job(sweep_dir: Path, name: str, overrides: list[str], val_acc: float | None) -> None:
    """A job directory as a sweep leaves it; `val_acc=None`: the job failed."""
    (sweep_dir / name / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), sweep_dir / name / ".hydra" / "overrides.yaml")
    metrics = {"status": "failed", "error": "diverged"}
    if val_acc is not None:
        metrics = {"status": "completed", "val/acc": val_acc, "test/acc": val_acc}
    (sweep_dir / name / "metrics.json").write_text(json.dumps(metrics))


def grid_sweep(sweep: Path) -> None:
    """lr x batch size, lr 1.0 diverging; the epochs are the same for every job."""
    runs = [("0.001", "100", 0.81), ("0.01", "100", 0.88), ("1.0", "100", None)]
    runs += [("0.001", "500", 0.70), ("0.01", "500", 0.84), ("1.0", "500", None)]
    for i, (lr, batch, acc) in enumerate(runs):
        make_job(
            sweep, str(i), [f"optimizer.lr={lr}", f"data.batch_size={batch}", "trainer.max_epochs=1"], acc
        )


def points(ax) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) of the completed jobs (a scatter) and of the failed ones (markers on the bottom edge)."""
    (completed,) = ax.collections
    failed = ax.lines[0].get_xydata() if ax.lines else np.empty((0, 2))
    return np.asarray(completed.get_offsets()), failed


def test_a_point_per_job_on_a_log_axis_and_failed_jobs_on_the_bottom_edge(tmp_path: Path) -> None:
    grid_sweep(tmp_path)
    fig = metric_figure(read_jobs(tmp_path), "optimizer.lr", "val/acc")
    (ax,) = fig.axes
    completed, failed = points(ax)
    assert sorted(map(tuple, completed)) == [(0.001, 0.70), (0.001, 0.81), (0.01, 0.84), (0.01, 0.88)]
    assert failed.tolist() == [[1.0, 0.0], [1.0, 0.0]]  # y in axes coordinates: the bottom edge
    assert ax.lines[0].get_transform() == ax.get_xaxis_transform()
    assert ax.get_xlim()[0] < 0.001 and ax.get_xlim()[1] > 1.0  # the failed jobs' values are in view
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "optimizer.lr" and ax.get_ylabel() == "val/acc"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["completed (4)", "failed (2)"]

    batch = metric_figure(read_jobs(tmp_path), "data.batch_size", "val/acc").axes[0]
    assert batch.get_xscale() == "linear" and len(points(batch)[0]) == 4


def test_a_zero_weight_decay_and_options_by_name(tmp_path: Path) -> None:
    for i, (decay, acc) in enumerate([("0", 0.80), ("1e-4", 0.82), ("1e-2", 0.79)]):
        make_job(tmp_path / "decay", str(i), [f"optimizer.weight_decay={decay}"], acc)
    ax = metric_figure(read_jobs(tmp_path / "decay"), "optimizer.weight_decay", "val/acc").axes[0]
    assert ax.get_xscale() == "symlog"  # log, with 0 on a linear stretch

    for i, (name, acc) in enumerate([("sgd", 0.82), ("adam", 0.91), ("adamw", None)]):
        make_job(tmp_path / "options", str(i), [f"optimizer={name}"], acc)
    ax = metric_figure(read_jobs(tmp_path / "options"), "optimizer", "val/acc").axes[0]
    completed, failed = points(ax)
    assert completed.tolist() == [[0.0, 0.82], [1.0, 0.91]] and failed.tolist() == [[2.0, 0.0]]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["sgd", "adam", "adamw"]  # job order


def test_the_callback_writes_a_png_and_a_tensorboard_image_per_swept_parameter(tmp_path: Path) -> None:
    grid_sweep(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    SweepPlots(metric="val/acc").on_multirun_end(config=config)

    plots = tmp_path / "plots"
    names = ["val_acc_vs_optimizer.lr", "val_acc_vs_data.batch_size"]  # not trainer.max_epochs: never varied
    assert sorted(p.name for p in plots.glob("*.png")) == sorted(f"{name}.png" for name in names)
    assert Image.open(plots / f"{names[0]}.png").size == (640, 400)
    events = EventAccumulator(str(plots))
    events.Reload()
    assert sorted(events.Tags()["images"]) == sorted(f"sweep/{name}" for name in names)
    assert plt.get_fignums() == []  # nothing left in pyplot's global state


def test_optuna_draws_its_history_and_importances(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1, log=True) + t.suggest_int("epochs", 1, 3), 5)
    optuna_plots(study, tmp_path)
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "optuna_history.png",
        "optuna_importances.png",
    ]
    assert plt.get_fignums() == []  # Optuna draws with pyplot: its figures are closed once saved


def test_the_spread_over_seeds_and_a_best_at_the_edge_are_drawn(tmp_path: Path) -> None:
    accs = {"0.001": (0.70, 0.74), "0.01": (0.80, 0.86), "0.1": (0.90, 0.92)}
    for i, (lr, values) in enumerate(accs.items()):
        for seed, acc in enumerate(values):
            make_job(tmp_path, f"{2 * i + seed}", [f"seed={seed}", f"optimizer.lr={lr}"], acc)
    SweepPlots("val/acc").on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert (tmp_path / "plots" / "val_acc_vs_optimizer.lr.png").is_file()

    jobs = read_jobs(tmp_path)
    (edge,) = [
        e for e in edges(sort_best_first(jobs, "val/acc", "max"), "val/acc") if e.key == "optimizer.lr"
    ]
    (ax,) = metric_figure(jobs, "optimizer.lr", "val/acc", edge=edge).axes
    (bars,) = ax.containers  # mean ± std per configuration
    assert np.allclose(bars.lines[0].get_ydata().astype(float), [0.91, 0.83, 0.72])  # best mean first
    assert np.allclose(bars.lines[2][0].get_segments()[0][:, 1], [0.91 - 0.01414, 0.91 + 0.01414], atol=1e-4)
    (line,) = [line for line in ax.lines if line.get_label() == "best at the top edge"]
    assert line.get_xdata()[0] == 0.1 and "try optimizer.lr=0.01,0.1,1" in ax.get_title()
