"""Sweep plots: when a multirun ends, the optimised metric against each swept parameter, one point per job.

A Hydra callback beside `SweepSummary` (conf/hydra/default.yaml), reading the same job directories. Each plot
is a PNG in `<sweep dir>/plots/` and an image in TensorBoard (`tensorboard --logdir <sweep dir>`, run
`plots`). A learning rate or weight decay is drawn on a log axis; a job that failed (no score) is an `x` on
the bottom edge at its parameter's value; a trial that Optuna pruned, a hollow triangle at its last value.
A sweep over seeds adds each configuration's mean and standard deviation (an error bar), and a best value at
an edge of the range swept is marked by a dashed line (`mnist_logreg.sweeps.summary.edges`). An Optuna search
(`hparams_search=optuna`) also gets Optuna's own optimisation history and parameter importances, drawn by
Optuna's matplotlib backend (`optuna_plots`, which the sweeper calls: it has the study open).

The sweep's own plots are drawn on figures made without pyplot, so nothing is left in its global state;
Optuna's are made with pyplot, and closed once saved.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mnist_logreg.files import replaced_atomically
from mnist_logreg.outputs import Status
from mnist_logreg.plotting import render
from mnist_logreg.sweeps.summary import (
    REPLICATE_KEYS,
    RUNNING,
    WAITING,
    Edge,
    Job,
    common_overrides,
    edges,
    is_log_scale,
    is_number,
    override_columns,
    read_jobs,
    replicate_groups,
    replicated_over,
    sort_best_first,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"
SIZE = (6.4, 4.0)  # inches: 640 x 400 pixels at DPI
DPI = 100


class SweepPlots(Callback):
    """Write `plots/<metric>_vs_<parameter>.png` for each parameter that differs between the jobs."""

    def __init__(self, metric: str = "val/acc", mode: str = "max") -> None:
        self.metric = metric
        self.mode = mode

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if int(os.environ.get("RANK", "0")) > 0:  # torchrun's other DDP ranks ran the same sweep
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = read_jobs(sweep_dir)
        common = common_overrides(jobs)
        swept = [key for key in override_columns(jobs) if key not in common]
        if len(jobs) < 2 or not swept:
            return
        name = self.metric.replace("/", "_")
        at_edge = {
            edge.key: edge for edge in edges(sort_best_first(jobs, self.metric, self.mode), self.metric)
        }
        figures = {
            f"{name}_vs_{key}": metric_figure(jobs, key, self.metric, self.mode, at_edge.get(key))
            for key in swept
        }
        save_plots(sweep_dir, figures)
        log.info("Sweep plots: %s", sweep_dir / PLOTS_DIR)


def metric_figure(
    jobs: list[Job], key: str, metric: str, mode: str = "max", edge: Edge | None = None
) -> Figure:
    """`metric` against the value of `key`, a point per completed job and an `x` per failed one.

    Numbers are placed on a numeric axis (log for rates and decays; symlog if one of the values is 0), other
    values (`optimizer=sgd,adam`) as categories in the order the jobs ran. Trials still running are left out.
    """
    from matplotlib.figure import Figure

    jobs = [job for job in jobs if key in job.overrides and job.status not in (RUNNING, WAITING)]
    numeric = all(is_number(job.overrides[key]) for job in jobs)

    def values(some: list[Job]) -> list[Any]:
        return [float(job.overrides[key]) if numeric else job.overrides[key] for job in some]

    scored = [(job, score) for job in jobs if (score := job.score(metric)) is not None]
    completed = [job for job, _ in scored]
    pruned = [
        job
        for job in jobs
        if job.status == Status.PRUNED and isinstance(job.metrics.get(metric), (int, float))
    ]
    failed = [job for job in jobs if job.score(metric) is None and job not in pruned]
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    if not numeric:  # the categories' order: the jobs', failed ones included
        ax.xaxis.update_units(np.array(values(jobs), dtype=object))
    scores = [score for _, score in scored]
    ax.scatter(values(completed), scores, label=f"completed ({len(completed)})")
    if pruned:
        ax.scatter(
            values(pruned),
            [job.metrics[metric] for job in pruned],
            marker="v",
            facecolors="none",
            edgecolors="tab:gray",
            label=f"pruned, last value ({len(pruned)})",
        )
    groups = [g for g in replicate_groups(jobs, metric, mode) if len(g.scores.get(metric, [])) > 1]
    if key not in REPLICATE_KEYS and groups:
        xs = [float(g.overrides[key]) if numeric else g.overrides[key] for g in groups if key in g.overrides]
        means = [g.mean(metric) for g in groups if key in g.overrides]
        stds = [float(np.std(g.scores[metric], ddof=1)) for g in groups if key in g.overrides]
        label = f"mean ± std over {replicated_over(jobs)}"
        ax.errorbar(xs, means, yerr=stds, fmt="_", color="black", capsize=4, label=label)
    if failed:
        # x in data coordinates, y in the axes' (0: the bottom edge): a failed job has no score to place.
        # A line's markers, unlike a scatter's, widen the x limits to take them in.
        ax.plot(
            values(failed),
            np.zeros(len(failed)),
            "x",
            color="tab:red",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=f"failed ({len(failed)})",
        )
    title = f"{metric} against {key}, {len(jobs)} jobs"
    if edge is not None and numeric:
        ax.axvline(edge.best, color="tab:orange", linestyle="--", label=f"best at the {edge.side} edge")
        title += f"\nbest at the edge: try {edge.suggestion()}"
    if numeric and is_log_scale(key):
        positive = [v for v in values(jobs) if v > 0]
        if len(positive) == len(jobs):
            ax.set_xscale("log")
        elif positive:
            ax.set_xscale("symlog", linthresh=min(positive))
    ax.set_xlabel(key)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def optuna_plots(study: Any, sweep_dir: Path) -> None:
    """Optuna's optimisation history and parameter importances of a search, beside the sweep's own plots."""
    import matplotlib
    import optuna
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure
    from optuna.visualization import matplotlib as optuna_matplotlib

    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        return
    plots: dict[str, Callable[[Any], Axes]] = {"optuna_history": optuna_matplotlib.plot_optimization_history}
    # Importances compare the parameters across completed trials: it takes two, and a parameter that varies.
    if len(completed) >= 2 and study.best_trial.params:
        plots["optuna_importances"] = optuna_matplotlib.plot_param_importances
    figures = {}
    # Optuna's plots set pyplot's style (ggplot) for the whole process: the sweep's own plots, drawn after
    # these, keep matplotlib's defaults.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            for name, plot in plots.items():
                fig = plot(study).get_figure(root=True)
                assert isinstance(fig, Figure)  # a plot of its own: the root figure, never a subfigure
                fig.set_size_inches(8, 5)
                fig.set_layout_engine("constrained")  # room for the parameters' names
                figures[name] = fig
            save_plots(sweep_dir, figures)
        finally:
            for fig in figures.values():
                plt.close(fig)


def save_plots(sweep_dir: Path, figures: dict[str, Figure]) -> None:
    """Each figure as `plots/<name>.png` and as an image in TensorBoard (the event file in `plots/`)."""
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    directory = sweep_dir / PLOTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with SummaryWriter(str(directory)) as writer:
        for name, fig in figures.items():
            pixels = render(fig)
            with replaced_atomically(directory / f"{name}.png") as tmp:
                Image.fromarray(pixels).save(tmp, format="PNG")
            writer.add_image(f"sweep/{name}", pixels, dataformats="HWC")
