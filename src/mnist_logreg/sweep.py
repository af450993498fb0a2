"""The sweep summary: when a multirun ends, one row per job, best first, in `summary.csv` and `summary.md`.

A Hydra callback (named in `conf/hydra/default.yaml`), so it works with every sweeper and launcher: it reads
what each job left in its own directory (`.hydra/overrides.yaml` and `metrics.json`), not the launcher's
return values, which a job that was killed never produces.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

METRICS = ("val/acc", "test/acc", "test/loss", "fit_time_s")
HEADERS = {"fit_time_s": "fit time (s)"}
NOT_FINISHED = "no metrics.json: the job was killed or has not finished"
CONSOLE_ROWS = 20


@dataclass
class Job:
    """What one job of a sweep left in its directory."""

    name: str  # the directory, relative to the sweep dir: "0", "1", ...
    overrides: dict[str, str]  # as typed: {"optimizer.lr": "0.01"}
    status: str  # "completed" or "failed"
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def score(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        if self.status != "completed" or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        return float(value)

    def describe(self, metric: str) -> str:
        """`job 2 (optimizer.lr=0.1): val/acc 0.9012, test/acc 0.9050`."""
        overrides = " ".join(f"{key}={value}" for key, value in self.overrides.items())
        names = dict.fromkeys([metric, "val/acc", "test/acc"])
        scores = ", ".join(f"{name} {self.metrics[name]:.4f}" for name in names if name in self.metrics)
        return f"job {self.name} ({overrides}): {scores}"


class SweepSummary(Callback):
    """Write the summary at the sweep dir, print the best job, and fail the sweep if a job failed.

    `metric` and `mode` say what "best" means (the sweep's `optimized_metric`). A failed job makes the sweep
    end with exit status 1 once the summary is written, unless `allow_failed_jobs` (a search, where a trial
    that diverges is part of the exploration): then only a sweep in which every job failed does.
    """

    def __init__(self, metric: str = "val/acc", mode: str = "max", allow_failed_jobs: bool = False) -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}: use 'max' or 'min'")
        self.metric = metric
        self.mode = mode
        self.allow_failed_jobs = allow_failed_jobs

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if (
            int(os.environ.get("RANK", "0")) > 0
        ):  # torchrun's other DDP ranks ran the same sweep: rank 0 reports
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sort_best_first(read_jobs(sweep_dir), self.metric, self.mode)
        if not jobs:
            log.warning("No job directories in %s: no summary written", sweep_dir)
            return
        write_summary(sweep_dir, jobs, self.metric, self.mode)

        common = common_overrides(jobs)
        lines = [f"Sweep summary, best first by {self.metric} ({sweep_dir / 'summary.md'}):"]
        if common:
            lines.append("every job: " + " ".join(f"{key}={value}" for key, value in common.items()))
        lines.append(markdown_table(jobs[:CONSOLE_ROWS], self.metric, common))
        if len(jobs) > CONSOLE_ROWS:
            lines.append(f"... and {len(jobs) - CONSOLE_ROWS} more")
        log.info("%s", "\n".join(lines))
        if jobs[0].score(self.metric) is not None:
            log.info("Best %s", jobs[0].describe(self.metric))

        failed = [job for job in jobs if job.status != "completed"]
        if failed and (not self.allow_failed_jobs or len(failed) == len(jobs)):
            log.error(
                "%d of %d jobs failed (job %s: %s); see %s",
                len(failed),
                len(jobs),
                failed[0].name,
                failed[0].error,
                sweep_dir / "summary.md",
            )
            sys.exit(1)


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under `sweep_dir` (those with `.hydra/overrides.yaml`), in job order."""
    jobs = []
    for overrides_file in sweep_dir.rglob(".hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = {}
        for override in OmegaConf.load(overrides_file):
            key, _, value = str(override).partition("=")
            overrides[key.lstrip("+~")] = value
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        jobs.append(
            Job(
                name=job_dir.relative_to(sweep_dir).as_posix(),
                overrides=overrides,
                status=metrics.pop("status", "failed"),
                error=metrics.pop("error", "" if metrics else NOT_FINISHED),
                metrics=metrics,
            )
        )
    return sorted(jobs, key=lambda job: _natural_key(job.name))


def sort_best_first(jobs: list[Job], metric: str, mode: str) -> list[Job]:
    """Completed jobs by `metric`, best first (ties keep job order), then the jobs without a score."""

    def key(job: Job) -> tuple[bool, float]:
        score = job.score(metric)
        if score is None:
            return True, 0.0
        return False, -score if mode == "max" else score

    return sorted(jobs, key=key)


def metric_columns(metric: str) -> list[str]:
    return list(METRICS) if metric in METRICS else [metric, *METRICS]


def override_columns(jobs: list[Job]) -> list[str]:
    """Every key overridden in some job, in the order typed."""
    return list(dict.fromkeys(key for job in jobs for key in job.overrides))


def write_summary(sweep_dir: Path, jobs: list[Job], metric: str, mode: str) -> None:
    """`summary.csv` (every value, full precision) and `summary.md` (the same table, rounded, to read)."""
    columns = ["job", *override_columns(jobs), "status", *metric_columns(metric), "error"]
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for job in jobs:
            values = {"job": job.name, "status": job.status, "error": job.error}
            values.update(job.overrides)
            values.update(job.metrics)
            writer.writerow([values.get(column, "") for column in columns])

    failed = sum(job.status != "completed" for job in jobs)
    better = "higher" if mode == "max" else "lower"
    lines = [f"# Sweep {sweep_dir.name}", ""]
    lines.append(f"{len(jobs)} jobs, best first by `{metric}` ({better} is better); {failed} failed.")
    if jobs[0].score(metric) is not None:
        lines += ["", f"Best: {jobs[0].describe(metric)}."]
    common = common_overrides(jobs)
    if common:
        lines += ["", "Every job: " + " ".join(f"`{key}={value}`" for key, value in common.items()) + "."]
    lines += ["", markdown_table(jobs, metric, common), ""]
    (sweep_dir / "summary.md").write_text("\n".join(lines))


def common_overrides(jobs: list[Job]) -> dict[str, str]:
    """The overrides every job of a sweep has with the same value (none for a single job)."""
    if len(jobs) < 2:
        return {}
    first = jobs[0].overrides
    return {key: value for key, value in first.items() if all(j.overrides.get(key) == value for j in jobs)}


def markdown_table(jobs: list[Job], metric: str, common: dict[str, str]) -> str:
    """The overrides that vary (numbers to 4 significant digits), status, the metrics (to 4 places, times
    to 0.1 s) and the reason a job failed."""
    overrides = [key for key in override_columns(jobs) if key not in common]
    metrics = metric_columns(metric)
    header = ["job", *overrides, "status", *(HEADERS.get(name, name) for name in metrics), "error"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        cells = [job.name, *(_short(job.overrides.get(key, "")) for key in overrides), job.status]
        cells += [_format(name, job.metrics.get(name)) for name in metrics]
        cells.append(job.error)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def _short(value: str) -> str:
    """`0.0001032326035197658` -> `0.0001032`; integers and text as they are."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if any(c in value for c in ".eE") and math.isfinite(number) else value


def _format(name: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return f"{value:.1f}" if name.endswith("_s") else f"{value:.4f}"


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Job 10 after job 9."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]
