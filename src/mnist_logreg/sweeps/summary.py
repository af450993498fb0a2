"""The sweep summary: when a multirun ends, one row per job, best first, in `summary.csv` and `summary.md`.

A Hydra callback (named in `conf/hydra/default.yaml`), so it works with every sweeper and launcher: it reads
what each job left in its own directory (`.hydra/overrides.yaml` and `metrics.json`), not the launcher's
return values, which a job that was killed never produces. An Optuna search's sweep dir names its study
(`study.yaml`): then the rows are the study's trials, from every worker and invocation, with their state
(completed, pruned, failed, running) and job directory.

Below the table: one row per configuration with the mean and standard deviation over its seeds and folds
(`data.fold`), when a sweep repeats configurations over several; the best configuration against each other
one, paired seed by seed and fold by fold, with the 95% interval of the difference (`comparison.py`); and
a line for each swept number whose best value lies at an edge of its range, with the range to try next.

Any time, without running a trial (another worker's search still running, say):

    python -m mnist_logreg.sweeps logs/sweeps/<sweep>          # rewrite its summary and plots
    python -m mnist_logreg.sweeps --storage sqlite:///search.db --study-name sgd logs/sweeps/report
    python -m mnist_logreg.sweeps.summary logs/sweeps/<sweep>          # rewrite its summary and plots
    python -m mnist_logreg.sweeps.summary --storage sqlite:///search.db --study-name sgd logs/sweeps/report
    python -m mnist_logreg.sweeps compare logs/sweeps/<A> logs/sweeps/<B>   # two sweeps, paired
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.errors import UserError
from mnist_logreg.files import replaced_atomically, write_text
from mnist_logreg.naming import short_number
from mnist_logreg.outputs import Status, read_record
from mnist_logreg.sweeps.comparison import Difference, paired_difference
from mnist_logreg.sweeps.study import ERROR, JOB_DIR, JOB_DIRS, RETRY_OF, STUDY_FILE, open_storage

log = logging.getLogger(__name__)

METRICS = ("val/acc", "test/acc", "test/loss", "fit_time_s")
# Overrides that a search gives each job to say which trial it is: not parameters, so not columns.
HIDDEN = ("trial.", "callbacks.optuna_pruning")
# A study's trials still under way (and a job's recorded `Status`es besides).
RUNNING, WAITING = "running", "waiting"
# A pruned trial is part of a search, not a failure; a debug preset's run is a smoke test, not a result.
NOT_FAILED = (Status.COMPLETED, Status.PRUNED, RUNNING, WAITING, Status.DEBUG)
STATES = {
    "COMPLETE": Status.COMPLETED,
    "PRUNED": Status.PRUNED,
    "FAIL": Status.FAILED,
    "RUNNING": RUNNING,
    "WAITING": WAITING,
}
LOG_KEYS = ("lr", "max_lr", "weight_decay")  # the last part of a key whose values span decades
EDGE_FRACTION = 0.05  # an Optuna best this close to a bound (of the range's width, log or not) is at its edge
HEADERS = {"fit_time_s": "fit time (s)"}
NOT_FINISHED = "no metrics.json: the job was killed or has not finished"
LOST = "no metrics.json: its worker or job was killed"
CONSOLE_ROWS = 20


@dataclass
class Job:
    """What one job of a sweep left in its directory (a trial of a study: also its state in the study)."""

    name: str  # the job's number ("0" of the directory "0_lr-0.1"); a trial's number
    overrides: dict[str, str]  # as typed: {"optimizer.lr": "0.01"}
    status: str  # a recorded `Status`; a trial's also "running" or "waiting"
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    trial: bool = False  # a trial of an Optuna study, named by its number
    directory: str = ""  # the job's directory (a study's trials may lie in several sweep dirs)
    ranges: dict[str, Range] = field(default_factory=dict)  # a trial's search space: the numeric ones

    def score(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        if self.status != Status.COMPLETED or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        return float(value)

    def describe(self, metric: str) -> str:
        """`job 2 (optimizer.lr=0.1): val/acc 0.9012, test/acc 0.9050`."""
        overrides = " ".join(f"{key}={value}" for key, value in self.overrides.items())
        names = dict.fromkeys([metric, "val/acc", "test/acc"])
        scores = ", ".join(f"{name} {self.metrics[name]:.4f}" for name in names if name in self.metrics)
        return f"{'trial' if self.trial else 'job'} {self.name} ({overrides}): {scores}"


@dataclass(frozen=True)
class Range:
    """A numeric search dimension: `low` to `high`, sampled on a log scale or not; an integer or not."""

    low: float
    high: float
    log: bool
    integer: bool


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
        groups = replicate_groups(jobs, self.metric, self.mode)
        if groups:
            over = replicated_over(jobs)
            lines += [f"Over {over}, best mean first:", groups_table(groups, self.metric, over)]
            if len(groups) > 1:
                lines += [
                    f"The best against each other, on the {over} both completed:",
                    differences_table(groups, self.metric, over),
                ]
        log.info("%s", "\n".join(lines))
        if jobs[0].score(self.metric) is not None:
            log.info("Best %s", jobs[0].describe(self.metric))
        for edge in edges(jobs, self.metric):
            log.warning("%s", edge.sentence())
        if code_versions(jobs):
            log.warning("%s", code_versions(jobs))

        failed = [job for job in jobs if job.status not in NOT_FAILED]
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
    """Every job directory under `sweep_dir` (those with `.hydra/overrides.yaml`), in job order; for an
    Optuna search, every trial of its study, in trial order."""
    if (sweep_dir / STUDY_FILE).exists():
        study = OmegaConf.load(sweep_dir / STUDY_FILE)
        return read_study(str(study.storage), str(study.study_name), sweep_dir)
    jobs = []
    for overrides_file in sweep_dir.rglob(".hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        overrides = {}
        for override in OmegaConf.load(overrides_file):
            key, _, value = str(override).partition("=")
            key = key.lstrip("+~")
            if not key.startswith(HIDDEN):
                overrides[key] = value
        metrics = read_record(job_dir)
        relative = job_dir.relative_to(sweep_dir).as_posix()
        jobs.append(
            Job(
                name=relative.split("_", 1)[0] if re.match(r"\d+_", relative) else relative,
                directory=relative,
                overrides=overrides,
                status=metrics.pop("status", Status.FAILED),
                error=metrics.pop("error", "" if metrics else NOT_FINISHED),
                metrics=metrics,
            )
        )
    return sorted(jobs, key=lambda job: _natural_key(job.name))


def read_study(storage: str, study_name: str, sweep_dir: Path) -> list[Job]:
    """A row per trial of the study, whichever worker ran it: its state in the study, its parameters, and
    the metrics its job directory holds (the study's value alone, where that directory is out of reach)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    trials = study.get_trials(deepcopy=False)
    retries = {t.user_attrs[RETRY_OF]: t.number for t in trials if RETRY_OF in t.user_attrs}
    metric = study.user_attrs.get("metric")
    jobs = []
    for trial in trials:
        job_dir = trial.user_attrs.get(JOB_DIR)  # none: the trial never ran (it could not be composed)
        fold_dirs = trial.user_attrs.get(JOB_DIRS)  # a trial scored over folds: one job per fold
        if fold_dirs:
            metrics = over_folds([read_record(fold_dir) for fold_dir in fold_dirs])
        else:
            metrics = read_record(job_dir) if job_dir else {}
        status = STATES.get(trial.state.name, trial.state.name.lower())
        recorded = metrics.pop("status", None)
        error = metrics.pop("error", "")
        if status == Status.FAILED and recorded is None:
            error = trial.user_attrs.get(ERROR, LOST)
        if trial.number in retries:
            error = f"{error}; tried again as trial {retries[trial.number]}".lstrip("; ")
        if trial.value is not None and metric and metric not in metrics:
            metrics[metric] = trial.value
        for key in ("study", "trial"):
            metrics.pop(key, None)
        jobs.append(
            Job(
                name=str(trial.number),
                overrides={key: str(value) for key, value in trial.params.items()},
                status=status,
                error=error,
                metrics=metrics,
                trial=True,
                directory=_relative(Path(job_dir), sweep_dir) if job_dir else "",
                ranges={key: r for key, d in trial.distributions.items() if (r := _range(d)) is not None},
            )
        )
    return jobs


def over_folds(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A trial scored over folds as one row: its folds' numbers averaged, once every fold completed; else
    the record of the first fold that did not (a pruned one's last value), its error naming the fold."""
    for fold, record in enumerate(records):
        if not record:  # running, or killed: the trial's state says which
            return {}
        if record.get("status") != Status.COMPLETED:
            error = record.get("error")
            return {**record, "error": f"fold {fold}: {error}"} if error else record
    identity = ("seed", "folds", "fold", "trial")
    numbers = [
        key
        for key, value in records[0].items()
        if key not in identity and all(_is_number(record.get(key)) for record in records)
    ]
    averaged = {key: statistics.fmean(record[key] for record in records) for key in numbers}
    return {"status": Status.COMPLETED, **averaged, "folds": len(records)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _range(distribution: Any) -> Range | None:
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        integer = isinstance(distribution, IntDistribution)
        return Range(distribution.low, distribution.high, distribution.log, integer)
    return None


def _relative(directory: Path, sweep_dir: Path) -> str:
    """A job directory as short as it stays unambiguous: relative to the sweep dir, or to here, if inside."""
    for base in (sweep_dir.resolve(), Path.cwd()):
        if directory.is_relative_to(base):
            return directory.relative_to(base).as_posix()
    return str(directory)


def sort_best_first(jobs: list[Job], metric: str, mode: str) -> list[Job]:
    """Completed jobs by `metric`, best first (ties keep job order), then pruned ones by their last value,
    then the jobs without a score."""

    def key(job: Job) -> tuple[int, float]:
        value = job.metrics.get(metric)
        if (
            job.status not in (Status.COMPLETED, Status.PRUNED)
            or not isinstance(value, (int, float))
            or math.isnan(value)
        ):
            return 2, 0.0
        return int(job.status == Status.PRUNED), -value if mode == "max" else value

    return sorted(jobs, key=key)


def metric_columns(metric: str) -> list[str]:
    return list(METRICS) if metric in METRICS else [metric, *METRICS]


def override_columns(jobs: list[Job]) -> list[str]:
    """Every key overridden in some job, in the order typed."""
    return list(dict.fromkeys(key for job in jobs for key in job.overrides))


def write_summary(sweep_dir: Path, jobs: list[Job], metric: str, mode: str) -> None:
    """`summary.csv` (every value, full precision) and `summary.md` (the same table, rounded, to read)."""
    study = jobs[0].trial
    first = "trial" if study else "job"
    columns = [first, *override_columns(jobs), "status", *metric_columns(metric), "error"]
    columns += ["directory"]
    with replaced_atomically(sweep_dir / "summary.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for job in jobs:
            values = {first: job.name, "status": job.status, "error": job.error, "directory": job.directory}
            values.update(job.overrides)
            values.update(job.metrics)
            writer.writerow([values.get(column, "") for column in columns])

    better = "higher" if mode == "max" else "lower"
    lines = [f"# Sweep {sweep_dir.name}", ""]
    counts = Counter(job.status for job in jobs)
    failed = sum(n for status, n in counts.items() if status not in NOT_FAILED)
    if study:
        states = ", ".join(f"{n} {status}" for status, n in counts.items() if status not in NOT_FAILED)
        states = ", ".join(f"{counts[s]} {s}" for s in NOT_FAILED if counts[s]) + (
            f", {states}" if states else ""
        )
        lines.append(f"{len(jobs)} trials ({states}), best first by `{metric}` ({better} is better).")
    else:
        lines.append(f"{len(jobs)} jobs, best first by `{metric}` ({better} is better); {failed} failed.")
    if counts["debug"]:
        lines += ["", f"{counts['debug']} debug runs (`debug=...`: smoke tests, not results) are not ranked."]
    if jobs[0].score(metric) is not None:
        lines += ["", f"Best: {jobs[0].describe(metric)}."]
    if code_versions(jobs):
        lines += ["", code_versions(jobs)]
    common = common_overrides(jobs)
    if common:
        lines += ["", "Every job: " + " ".join(f"`{key}={value}`" for key, value in common.items()) + "."]
    lines += ["", markdown_table(jobs, metric, common)]
    groups = replicate_groups(jobs, metric, mode)
    if groups:
        over = replicated_over(jobs)
        lines += [
            "",
            f"## Over {over}",
            "",
            f"Each configuration's mean ± standard deviation over its {over}, best mean first:",
            "",
            groups_table(groups, metric, over),
        ]
        if len(groups) > 1:
            lines += [
                "",
                "## The best against each other",
                "",
                f"The best configuration's `{metric}` minus each other's, paired on the {over} both "
                "completed: the mean difference and its 95% interval (paired t). "
                "Where the interval contains 0, the two cannot be told apart.",
                "",
                differences_table(groups, metric, over),
            ]
    notes = edges(jobs, metric)
    if notes:
        lines += ["", "## At the edge", ""] + [f"- {note.sentence()}" for note in notes]
    write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")


def code_versions(jobs: list[Job]) -> str:
    """One line when the jobs were not all made by the same unmodified code (their provenance): which
    commit, modified or not, made which jobs; "" when one clean commit made every job that recorded one."""
    made_by: dict[str, list[str]] = {}
    for job in sorted(jobs, key=lambda job: _natural_key(job.name)):
        code = (job.metrics.get("provenance") or {}).get("code") or {}
        if not code:
            continue  # a job that did not finish records none
        label = str(code.get("commit", "unknown"))[:12]
        if code.get("modified"):
            patch = str(code.get("patch_sha256", ""))[:8]  # tells apart trees modified differently
            label += f" modified (code.patch {patch})" if patch else " modified"
        made_by.setdefault(label, []).append(job.name)
    if len(made_by) < 2 and not any("modified" in label for label in made_by):
        return ""
    kind = "trial" if jobs[0].trial else "job"
    parts = [f"{label}: {kind}s {', '.join(names)}" for label, names in made_by.items()]
    if len(made_by) == 1:
        return f"Made by a modified tree, {parts[0]} (each job's code.patch holds the change)."
    return f"Made by different code: {'; '.join(parts)}."


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
    study = jobs[0].trial if jobs else False
    header = [
        "trial" if study else "job",
        *overrides,
        "status",
        *(HEADERS.get(n, n) for n in metrics),
        "error",
    ]
    header += ["directory"] if study else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        cells = [job.name, *(short_number(job.overrides.get(key, "")) for key in overrides), job.status]
        cells += [_format(name, job.metrics.get(name)) for name in metrics]
        cells.append(job.error)
        cells += [job.directory] if study else []
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


# What a sweep repeats one configuration over, not part of the configuration: its replicates.
REPLICATE_KEYS = {"seed": "seeds", "data.fold": "folds"}
Replicate = tuple[str, str, str]  # (seed, folds, fold) as recorded; "" where the run had none


def replicate(job: Job) -> Replicate:
    """Which replicate a job is: its seed and fold as its record names them (or its overrides, if it left
    none), so that jobs of two configurations, or of two sweeps, with the same seed and fold pair up."""
    recorded = {"seed": "seed", "folds": "data.folds", "fold": "data.fold"}
    return tuple(  # type: ignore[return-value]
        str(job.metrics.get(name, job.overrides.get(key, ""))) for name, key in recorded.items()
    )


@dataclass
class Group:
    """One configuration of a sweep over seeds or folds: its overrides (those two left out) and its
    completed jobs' scores, by replicate."""

    overrides: dict[str, str]
    runs: int = 0  # jobs in the group, completed or not
    replicates: dict[Replicate, dict[str, float]] = field(default_factory=dict)  # completed: metric -> value

    @property
    def scores(self) -> dict[str, list[float]]:
        """Metric -> one value per completed replicate."""
        scores: dict[str, list[float]] = {}
        for values in self.replicates.values():
            for name, value in values.items():
                scores.setdefault(name, []).append(value)
        return scores

    def mean(self, metric: str) -> float:
        return statistics.fmean(self.scores[metric])

    def spread(self, metric: str) -> str:
        """`0.9012 ± 0.0031`: the mean and the standard deviation over the replicates (n - 1)."""
        values = self.scores.get(metric, [])
        if not values:
            return ""
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.fmean(values):.4f} ± {std:.4f}"

    def against(self, other: Group, metric: str) -> Difference | None:
        """This configuration's `metric` minus `other`'s on the replicates both completed, with its 95%
        interval (paired t); None with fewer than 2 shared replicates."""
        pairs = [
            (values[metric], other.replicates[r][metric])
            for r, values in self.replicates.items()
            if metric in values and metric in other.replicates.get(r, {})
        ]
        if len(pairs) < 2:
            return None
        return paired_difference([mine for mine, _ in pairs], [theirs for _, theirs in pairs])


def group_jobs(jobs: list[Job], metric: str, mode: str) -> list[Group]:
    """Every configuration among `jobs` (overrides less seed and fold), best mean of `metric` first, then
    those without a completed job."""
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for job in jobs:
        config = {key: value for key, value in job.overrides.items() if key not in REPLICATE_KEYS}
        group = groups.setdefault(tuple(config.items()), Group(config))
        group.runs += 1
        if job.score(metric) is None:
            continue
        values = {name: job.metrics.get(name) for name in dict.fromkeys([metric, *METRICS])}
        # A duplicated replicate (`seed=0,0`) keeps its first job: pairs stay one to one.
        group.replicates.setdefault(
            replicate(job), {n: float(v) for n, v in values.items() if isinstance(v, (int, float))}
        )
    scored = [g for g in groups.values() if g.scores.get(metric)]
    scored.sort(key=lambda g: -g.mean(metric) if mode == "max" else g.mean(metric))
    return scored + [g for g in groups.values() if not g.scores.get(metric)]


def replicate_groups(jobs: list[Job], metric: str, mode: str) -> list[Group]:
    """The sweep's configurations, best mean first, when it ran some over more than one seed or fold;
    else none."""
    if len({tuple(job.overrides.get(key) for key in REPLICATE_KEYS) for job in jobs}) < 2:
        return []
    groups = group_jobs(jobs, metric, mode)
    return groups if any(group.runs > 1 for group in groups) else []


def replicated_over(jobs: list[Job]) -> str:
    """`seeds`, `folds`, or `seeds and folds`: what the sweep's jobs repeat their configurations over."""
    swept = [name for key, name in REPLICATE_KEYS.items() if len({j.overrides.get(key) for j in jobs}) > 1]
    return " and ".join(swept) or "seeds"


def groups_table(groups: list[Group], metric: str, over: str = "seeds") -> str:
    """A row per configuration: the overrides that vary, the replicates completed of those run,
    mean ± std."""
    keys = [k for k in dict.fromkeys(k for g in groups for k in g.overrides) if _varies(groups, k)]
    names = list(dict.fromkeys([metric, "val/acc", "test/acc"]))
    header = [*keys, over, *(f"{name} (mean ± std)" for name in names)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in groups:
        cells = [short_number(group.overrides.get(key, "")) for key in keys]
        cells.append(f"{len(group.scores.get(metric, []))} of {group.runs}")
        cells += [group.spread(name) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_table(groups: list[Group], metric: str, over: str = "seeds") -> str:
    """The best configuration against each other one, on the replicates both completed: the mean paired
    difference of `metric` (best minus other), its 95% interval, and whether the two can be told apart."""
    best, others = groups[0], [g for g in groups[1:] if g.scores.get(metric)]
    keys = [k for k in dict.fromkeys(k for g in groups for k in g.overrides) if _varies(groups, k)]
    header = [*keys, f"paired {over}", f"best - this, {metric} [95% interval]", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for group in others:
        cells = [short_number(group.overrides.get(key, "")) for key in keys]
        difference = best.against(group, metric)
        if difference is None:
            cells += ["fewer than 2", "", f"not paired: no 2 {over} completed by both"]
        else:
            cells += [str(difference.n), difference.interval(), difference.verdict("the best", "this")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _varies(groups: list[Group], key: str) -> bool:
    return len({g.overrides.get(key) for g in groups}) > 1


@dataclass(frozen=True)
class Edge:
    """A swept number whose best value lies at an edge of its range, and the range to try next."""

    key: str
    best: float
    side: str  # "top" or "bottom"
    range: Range
    searched: bool  # an Optuna dimension (an interval), not a grid's values
    next_values: tuple[float, ...]  # the next grid, or the next interval's bounds

    def suggestion(self) -> str:
        """The override that sweeps the next range, in the syntax the sweep used."""
        if not self.searched:
            return f"{self.key}=" + ",".join(_number(v, self.range.integer) for v in self.next_values)
        low, high = (_number(v, self.range.integer) for v in self.next_values)
        if self.range.integer:
            return f"'{self.key}=range({low}, {int(high) + 1})'"
        interval = f"interval({low}, {high})"
        return f"'{self.key}=" + (f"tag(log, {interval})'" if self.range.log else f"{interval}'")

    def sentence(self) -> str:
        r = self.range
        return (
            f"{self.key}: the best value, {_number(self.best, r.integer)}, is at the {self.side} of the "
            f"range swept ({_number(r.low, r.integer)} to {_number(r.high, r.integer)}), so the optimum "
            f"may lie beyond it; try {self.suggestion()}"
        )


def edges(jobs: list[Job], metric: str) -> list[Edge]:
    """The swept numbers (not the seed) whose value in the best job is at an edge of their range.

    A grid's edge is its smallest or largest value, when it has at least three (with two, the best is
    always at one). An Optuna dimension's is its bounds, give or take `EDGE_FRACTION` of its width. The next
    range is centred on the best value, with the same width (a decade each way on a log scale), and kept
    at or above 0 or 1 when the range was.
    """
    best = jobs[0] if jobs else None
    if best is None or best.score(metric) is None:
        return []
    found = []
    for key, text in best.overrides.items():
        if key in REPLICATE_KEYS or not is_number(text):
            continue
        value = float(text)
        if key in best.ranges:
            r, searched = best.ranges[key], True
            position = _position(value, r)
            side = "bottom" if position <= EDGE_FRACTION else "top" if position >= 1 - EDGE_FRACTION else ""
        else:
            values = sorted({float(j.overrides[key]) for j in jobs if is_number(j.overrides.get(key, ""))})
            if len(values) < 3:
                continue
            integer = all(re.fullmatch(r"-?\d+", text) for text in _grid(jobs, key))
            log_scale = values[0] > 0 and (is_log_scale(key) or values[-1] / values[0] >= 100)
            r, searched = Range(values[0], values[-1], log_scale, integer), False
            side = "bottom" if value == values[0] else "top" if value == values[-1] else ""
        if not side or (side == "bottom" and value <= 0 and r.low >= 0):
            continue
        next_values = _next_values(value, r, searched, len(_grid(jobs, key)))
        found.append(Edge(key, value, side, r, searched, next_values))
    return found


def is_log_scale(key: str) -> bool:
    """A rate or a decay (`optimizer.lr`): drawn on a log axis, and extended by decades."""
    return key.rsplit(".", 1)[-1] in LOG_KEYS


def _grid(jobs: list[Job], key: str) -> set[str]:
    return {j.overrides[key] for j in jobs if key in j.overrides}


def _position(value: float, r: Range) -> float:
    """Where `value` lies in the range, 0 at the low end, 1 at the high end (in log space for a log range)."""
    if r.high == r.low:
        return 0.5
    if r.log:
        return (math.log(value) - math.log(r.low)) / (math.log(r.high) - math.log(r.low))
    return (value - r.low) / (r.high - r.low)


def _next_values(best: float, r: Range, searched: bool, points: int) -> tuple[float, ...]:
    if r.log:
        low, high = best / 10, best * 10
    else:
        half = (r.high - r.low) / 2
        low, high = best - half, best + half
        floor = 1 if r.integer and r.low >= 1 else 0
        if r.low >= floor:
            low = max(low, floor)
    if searched:
        return low, high
    if r.log:
        return tuple(float(f"{v:.3g}") for v in np.geomspace(low, high, max(points, 3)))
    return tuple(float(f"{v:.3g}") for v in np.linspace(low, high, max(points, 3)))


def _number(value: float, integer: bool) -> str:
    return str(round(value)) if integer else f"{value:.3g}"


def is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _format(name: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return ""
    return f"{value:.1f}" if name.endswith("_s") else f"{value:.4f}"


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Job 10 after job 9."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def compare(dir_a: Path, dir_b: Path, metric: str = "val/acc", mode: str = "max") -> list[str]:
    """Lines comparing two sweeps (or two folders of run directories): the best configuration of each, its
    mean ± std, and A minus B paired on the seeds and folds both completed, with its 95% interval."""
    best: list[Group] = []
    lines = []
    for side, directory in (("A", dir_a), ("B", dir_b)):
        if not directory.is_dir():
            raise UserError(f"{directory} is not a directory: give a sweep dir or a folder of runs.")
        groups = [g for g in group_jobs(read_jobs(directory), metric, mode) if g.scores.get(metric)]
        if not groups:
            raise UserError(
                f"{directory} holds no completed run with {metric}: give a sweep dir or a folder of run "
                "directories (each with .hydra/overrides.yaml and metrics.json)."
            )
        group = groups[0]
        config = " ".join(f"{key}={value}" for key, value in group.overrides.items()) or "defaults"
        of = f", the best of {len(groups)} configurations" if len(groups) > 1 else ""
        runs = len(group.scores[metric])
        lines.append(f"{side}: {directory} ({config}{of}): {metric} {group.spread(metric)} over {runs} runs")
        best.append(group)
    difference = best[0].against(best[1], metric)
    if difference is None:
        raise UserError(
            f"{dir_a} and {dir_b} share fewer than 2 completed seeds or folds, so they cannot be paired: "
            "run both with the same seeds (seed=1,2,3) or folds (data.folds=5 'data.fold=range(5)')."
        )
    lines.append(
        f"A - B, {metric}, paired on {difference.n} shared seeds and folds: {difference.interval()} "
        f"(95% interval, paired t): {difference.verdict('A', 'B')}"
    )
    return lines
