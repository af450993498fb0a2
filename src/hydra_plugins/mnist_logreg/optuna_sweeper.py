"""A Hydra sweeper that searches with Optuna: `python train.py -m hparams_search=optuna`.

Why not the published `hydra-optuna-sweeper`: its latest release (1.3.0) requires `optuna<3`, so it cannot
be installed beside a current Optuna, and it builds on distribution classes Optuna 3 deprecated. This sweeper
keeps its search-space syntax (Hydra's override grammar) and drives a current Optuna through ask-and-tell:

    optimizer.lr: tag(log, interval(1e-4, 1.0))    a float, sampled on a log scale
    optimizer.momentum: interval(0.0, 0.95)        a float
    trainer.max_epochs: range(1, 10)               an integer, 1 to 9
    data.batch_size: choice(100, 250, 500)         one of these

Trials run through the configured launcher, `n_jobs` at a time. The study is kept in a storage (by default
`study.journal` in the sweep dir), so the same command started K times with one `storage` and `study_name`
is K workers of one search: `n_trials` is the study's total, each worker's sampler is seeded apart, and a
trial whose worker was killed is failed by the others once `grace_period_s` passes without its heartbeat,
and its parameters tried again. A trial that fails or returns no finite value is told to Optuna as failed
and the search goes on. Each job is told its trial (the `trial` config node) and, with a `pruner`, reports
each validation to it (`mnist_logreg.callbacks.optuna_pruning`). The best parameters are printed and written
to `best_params.yaml` in the sweep dir, and Optuna's own plots of the search to `plots/`.

With `folds` (K), each trial is scored by K-fold cross-validation: its K jobs (`data.folds=K`, `data.fold=0`
to K - 1, in `<trial>/` of the sweep dir) are launched together, as many at a time as the launcher runs,
and Optuna is told the mean of their values. With a pruner, each fold's job reports its own epochs (fold
`i`'s epoch `e` at step `i * FOLD_STEP + e`) and the trial is pruned as soon as one fold is worse than the
other trials' values for that fold and epoch (`mnist_logreg.callbacks.optuna_pruning`): that needs no job
to wait for another's epoch, so it works the same whether the folds run side by side or one after another.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shlex
import signal
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Literal, cast

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.errors import UserError, one_line
from mnist_logreg.files import write_text
from mnist_logreg.naming import search_label
from mnist_logreg.outputs import Status, status
from mnist_logreg.sweeps.liveness import count_trials, fail_lost_trials, heartbeat
from mnist_logreg.sweeps.study import (
    ERROR,
    FOLD_VALUES,
    HEARTBEAT,
    JOB_DIR,
    JOB_DIRS,
    JOURNAL_SUFFIX,
    PRUNERS,
    RETRY_OF,
    STUDY_FILE,
    absolute,
    make_pruner,
    open_storage,
)

log = logging.getLogger(__name__)

_ABSENT = object()
DEFAULT_STORAGE = "study.journal"  # in the sweep dir, when no storage is named
PRUNING_CALLBACK = "mnist_logreg.callbacks.optuna_pruning.OptunaPruning"
SIGTERM_EXIT = 128 + signal.SIGTERM
JOB_NUM = "${hydra.job.num}"


class OptunaSweeper(Sweeper):
    """Run trials until the study has `n_trials` finished ones, asking Optuna for each one's parameters and
    telling it the task's return value.

    `params` maps an override key to a search-space expression; search-space overrides on the command line
    are added to it (and win), plain overrides are passed to every trial. `storage` (an Optuna URL such as
    `sqlite:///search.db`, or a path ending in `.journal`) with `study_name` keeps a study across
    invocations and shares it between workers.
    """

    # Optional in Hydra's Sweeper; `setup` sets them all, and Hydra calls it before `sweep`.
    config: DictConfig
    hydra_context: HydraContext
    launcher: Launcher

    def __init__(
        self,
        n_trials: int = 20,
        n_jobs: int = 1,
        direction: Literal["minimize", "maximize"] = "maximize",
        sampler: Any = None,
        storage: str | None = None,
        study_name: str | None = None,
        pruner: str | None = None,
        grace_period_s: float = 300.0,
        params: dict[str, str] | None = None,
        folds: int | None = None,
    ) -> None:
        self.n_trials = n_trials
        # As joblib counts: -1 is every core, -2 all but one.
        self.n_jobs = n_jobs if n_jobs >= 1 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        self.direction = direction
        self.sampler = sampler
        self.storage = storage
        self.study_name = study_name
        self.pruner = pruner
        self.grace_period_s = float(grace_period_s)
        self.params = dict(params or {})
        self.folds = folds
        self._running: dict[int, Any] = {}  # trial number -> Optuna trial, for the heartbeat and a stop

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna  # here, not at the top: Hydra imports this module on every run, sweep or not

        from mnist_logreg.sweeps.plots import optuna_plots

        optuna.logging.disable_default_handler()  # Optuna's lines go to the sweep's log, formatted alike
        optuna.logging.enable_propagation()
        try:
            self._check_options()
            space, fixed = self._search_space(arguments)
        except UserError as error:  # one line and status 2, as the entry points end on a bad value
            log.error("%s", error)
            sys.exit(2)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        study = self._open_study(sweep_dir, list(space))
        log.info(
            "Optuna search: study %s (%s), %d trials in all, %d at a time, %s %s%s",
            study.study_name,
            self.storage_url,
            self.n_trials,
            self.n_jobs,
            self.direction,
            self._metric,
            f", {self.pruner} pruning" if self.pruner else "",
        )
        if self.folds:
            log.info("Each trial scored by its mean over %d folds: %d jobs a trial", self.folds, self.folds)
        with heartbeat(study, self._running, self.grace_period_s), stopped_by_signals():
            try:
                self._run_trials(study, space, fixed, sweep_dir)
            except BaseException as stop:  # a signal, Ctrl-C, or a crash: the trials running here are lost
                self._give_up_running(study, stop)
                raise
        self._report_best(study, fixed, sweep_dir)
        optuna_plots(study, sweep_dir)  # beside the sweep's own plots (`mnist_logreg.sweeps.plots`)

    def _check_options(self) -> None:
        if self.pruner is not None and self.pruner not in PRUNERS:
            raise UserError(
                f"hydra.sweeper.pruner={self.pruner} is not a pruner: use {' or '.join(PRUNERS)}, or null"
            )
        if self.storage and "://" not in self.storage and not self.storage.endswith(JOURNAL_SUFFIX):
            raise UserError(
                f"hydra.sweeper.storage={self.storage} is neither a database URL nor a journal file: use "
                f"sqlite:///{self.storage} (one machine), postgresql://host/db, or a path ending in .journal"
            )
        if self.folds is not None and (not isinstance(self.folds, int) or self.folds < 2):
            raise UserError(
                f"hydra.sweeper.folds={self.folds} is invalid: it must be a whole number >= 2 (the folds "
                "each trial is scored on), or null"
            )
        if self.folds and self.pruner == "hyperband":
            raise UserError(
                f"hydra.sweeper.folds={self.folds} works with pruner=median or null: hyperband's brackets "
                "count the epochs of one run, not of K folds"
            )
        if self.storage and not self.study_name:
            raise UserError(
                f"hydra.sweeper.storage={self.storage} needs the name that every worker of the search uses: "
                "add hydra.sweeper.study_name=<name>"
            )

    def _open_study(self, sweep_dir: Path, searched: list[str]) -> Any:
        """The study in the configured storage (the first worker creates it), or in the sweep dir.

        Unnamed, the study is named for what it searches and when (`lr+momentum_<the sweep dir's name>`),
        or keeps the name it has in the sweep dir (a search that goes on). Its value is named for the metric
        (`val/acc`), as optuna-dashboard shows it."""
        import optuna

        self.storage_url = absolute(self.storage or str(sweep_dir / DEFAULT_STORAGE))
        name = self.study_name or recorded_study_name(sweep_dir, self.storage_url)
        study = optuna.create_study(
            direction=self.direction,
            sampler=self.sampler,
            pruner=make_pruner(self.pruner),
            storage=open_storage(self.storage_url),
            study_name=name or f"{search_label(searched)}_{sweep_dir.name}",
            load_if_exists=True,
        )
        if OmegaConf.select(self.config, "optimized_metric") and not study.metric_names:
            with warnings.catch_warnings():  # experimental in Optuna since 3.2: the dashboard reads it
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([self._metric])
        if self.storage or study.trials:
            # Workers of one study must not draw the same trials from one seed, nor a later invocation the
            # first one's: each worker's sampler starts from a random state.
            study.sampler.reseed_rng()
        study.set_user_attr("metric", self._metric)  # what the study's values are, for its report
        write_text(
            sweep_dir / STUDY_FILE,
            OmegaConf.to_yaml({"storage": self.storage_url, "study_name": study.study_name}),
        )
        return study

    def _run_trials(self, study: Any, space: dict[str, Any], fixed: list[str], sweep_dir: Path) -> None:
        """Launch batches of up to `n_jobs` trials until the study has `n_trials` finished ones; meanwhile
        fail the trials of workers that stopped showing signs of life."""
        import optuna

        launched = 0  # this worker's job numbers
        jobs_per_trial = self.folds or 1
        while True:
            fail_lost_trials(study, self._running, self.grace_period_s)
            finished, running = count_trials(study)
            if finished >= self.n_trials:
                return
            # A trial over K folds is K jobs: as many trials as fill the launcher's n_jobs, and at least one.
            room = min(max(1, self.n_jobs // jobs_per_trial), self.n_trials - finished - running)
            if room <= 0:  # other workers' trials are still running: wait for them to end, or to be lost
                time.sleep(min(5.0, self.grace_period_s / 4))
                continue
            trials, batch = [], []
            for _ in range(room):
                trial = study.ask(space)
                trial.set_user_attr(HEARTBEAT, time.time())
                overrides = fixed + [f"{key}={value}" for key, value in trial.params.items()]
                jobs = self._trial_jobs(study, trial.number, overrides)
                try:
                    job_dirs = [self._compose_job(job) for job in jobs]
                except Exception as error:  # e.g. momentum drawn for optimizer=adam, which has none
                    log.warning(
                        "Trial %d cannot be composed, told as failed: %s", trial.number, one_line(error)
                    )
                    trial.set_user_attr(ERROR, f"cannot be composed: {one_line(error)}")
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                if self.folds:  # the trial's directory holds its folds' job directories
                    trial.set_user_attr(JOB_DIRS, [str(job_dir.resolve()) for job_dir in job_dirs])
                    trial.set_user_attr(JOB_DIR, str((sweep_dir / str(trial.number)).resolve()))
                else:
                    trial.set_user_attr(JOB_DIR, str(job_dirs[0].resolve()))
                self._running[trial.number] = trial
                trials.append(trial)
                batch += jobs
            if not batch:
                continue
            returns = self.launcher.launch(batch, initial_job_idx=launched)
            launched += len(batch)
            for index, trial in enumerate(trials):
                self._tell(study, trial, returns[index * jobs_per_trial : (index + 1) * jobs_per_trial])
                del self._running[trial.number]

    def _tell(self, study: Any, trial: Any, job_returns: Sequence[JobReturn]) -> None:
        """Tell Optuna how a trial ended: its value (over folds, their mean); pruned if one of its jobs was
        pruned; else failed. `skip_if_finished`: another worker may have taken it for lost meanwhile."""
        import optuna

        returned = [trial_value(job_return) for job_return in job_returns]
        values = [value for value in returned if value is not None]
        job_dirs = trial.user_attrs.get(JOB_DIRS) or [trial.user_attrs[JOB_DIR]]
        if len(values) == len(returned):
            if self.folds:
                trial.set_user_attr(FOLD_VALUES, values)
                log.info(
                    "Trial %d: %s %.4f ± %.4f over %d folds",
                    trial.number,
                    self._metric,
                    statistics.fmean(values),
                    statistics.stdev(values),
                    len(values),
                )
            study.tell(trial, statistics.fmean(values), skip_if_finished=True)
        elif any(status(job_dir) == Status.PRUNED for job_dir in job_dirs):
            study.tell(trial, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        else:
            log.warning("Trial %d failed or gave no value", trial.number)
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)

    def _trial_jobs(self, study: Any, number: int, overrides: list[str]) -> list[list[str]]:
        """The overrides of a trial's job; over folds, of its K jobs, one per fold."""
        if not self.folds:
            return [overrides + self._trial_overrides(study, number)]
        jobs = []
        for fold in range(self.folds):
            jobs.append([*overrides, f"data.folds={self.folds}", f"data.fold={fold}"])
            jobs[-1] += self._trial_overrides(study, number, fold)
        return jobs

    def _trial_overrides(self, study: Any, number: int, fold: int | None = None) -> list[str]:
        """What a job is told of its trial: its study and number (`trial.*`, which its `metrics.json`
        records), its own directory (the trial's number: unique in the study, whichever worker runs it; a
        fold's: the fold's number inside the trial's), and with a pruner, the callback that reports to the
        trial (and its fold)."""
        trial = {
            "study_name": quoted(study.study_name),
            "storage": quoted(self.storage_url),
            "number": number,
        }
        overrides = [f"+trial.{key}={value}" for key, value in trial.items()]
        # The configured subdir, with the trial's number for the launcher's job number (which counts this
        # worker's jobs only: workers in one sweep dir would collide).
        # A DictConfig (`hydra.sweep`) converts to a dict.
        sweep = cast(dict[str, Any], OmegaConf.to_container(self.config.hydra.sweep, resolve=False))
        subdir = sweep.get("subdir", JOB_NUM)
        if fold is None:
            subdir = str(subdir).replace(JOB_NUM, str(number))
        else:
            subdir = f"{number}/" + str(subdir).replace(JOB_NUM, str(fold))
        if not re.fullmatch(r"[\w.-]+", subdir):  # interpolations (`${run_label:${...}}`) parse only quoted
            subdir = quoted(subdir)
        overrides.append(f"hydra.sweep.subdir={subdir}")
        if self.pruner:
            options = {"_target_": PRUNING_CALLBACK, **trial, "monitor": quoted(self._metric)}
            options["pruner"] = self.pruner
            if fold is not None:
                options["fold"] = fold
            overrides.append(
                "+callbacks.optuna_pruning={" + ",".join(f"{k}:{v}" for k, v in options.items()) + "}"
            )
        return overrides

    def _compose_job(self, overrides: list[str]) -> Path:
        """The job's directory, from its config composed as the launcher will compose it (which raises
        here, before the launch, for overrides that cannot be composed)."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        return Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)

    def _give_up_running(self, study: Any, stop: BaseException) -> None:
        """Tell the trials running here as failed, to be tried again, and say how to go on with the study."""
        import optuna

        for number, trial in list(self._running.items()):
            try:
                study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                study.enqueue_trial(trial.params, user_attrs={RETRY_OF: number})
            except Exception as error:  # the storage itself may be what failed
                log.warning("Could not tell trial %d as failed: %s", number, one_line(error))
        self._running.clear()
        reasons = {SystemExit: "SIGTERM", KeyboardInterrupt: "Ctrl-C"}
        reason = reasons.get(type(stop), f"{type(stop).__name__}: {one_line(stop)}")
        log.error(
            "%s: the search stopped, its running trials told as failed; to go on with the study: %s",
            reason,
            self._continue_command(),
        )

    def _continue_command(self) -> str:
        """The command that started this worker; with the study in the sweep dir, that sweep dir too."""
        words = ["python", *sys.argv]
        if not self.storage and not any(word.startswith("hydra.sweep.dir=") for word in words):
            words.append(f"hydra.sweep.dir={self.config.hydra.sweep.dir}")
        return shlex.join(words)

    def _fold_sweep(self) -> list[str]:
        """What makes the best command run the trial's folds, as the search did."""
        if not self.folds:
            return []
        return ["-m", f"data.folds={self.folds}", f"'data.fold=range({self.folds})'"]

    @property
    def _metric(self) -> str:
        return str(OmegaConf.select(self.config, "optimized_metric", default="the task's return value"))

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """Optuna distributions for the search-space overrides; the plain overrides, as typed."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        # A configured dimension for a key this config lacks is left out: momentum under optimizer=adam.
        configured = [f"{key}={value}" for key, value in self.params.items() if self._has(key)]
        overrides = {o.get_key_element(): o for o in parser.parse_overrides(configured + list(arguments))}
        space = {key: distribution(o) for key, o in overrides.items() if o.is_sweep_override()}
        fixed = [f"{key}={o.get_value_element_as_str()}" for key, o in overrides.items() if key not in space]
        taken = [key for key in overrides if key.lstrip("+~") in ("data.folds", "data.fold")]
        if self.folds and taken:
            raise UserError(
                f"hydra.sweeper.folds={self.folds} sets data.folds and data.fold for each job: "
                f"leave {taken[0]} out of the command"
            )
        return space, fixed

    def _has(self, key: str) -> bool:
        if key.startswith("+") or OmegaConf.select(self.config, key, default=_ABSENT) is not _ABSENT:
            return True
        log.info("Not searching %s: the config has no such key", key)
        return False

    def _report_best(self, study: Any, fixed: list[str], sweep_dir: Path) -> None:
        import optuna

        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            log.error("No trial completed: no best parameters")
            return
        best = study.best_trial
        overrides = [f"{key}={value}" for key, value in best.params.items()]
        result = {
            "metric": self._metric,
            "direction": self.direction,
            "best_value": best.value,
            "best_params": best.params,
            "study": study.study_name,
            "trial": best.number,
            "job_dir": best.user_attrs.get(JOB_DIR),
            "command": " ".join(["python train.py", *search_free(fixed), *overrides, *self._fold_sweep()]),
            "trials": {"completed": len(completed), "total": len(study.trials)},
        }
        OmegaConf.save(OmegaConf.create(result), sweep_dir / "best_params.yaml")
        log.info(
            "Best trial: %s %.4f with %s (trial %d, %s)\n  %s",
            self._metric,
            best.value,
            " ".join(overrides),
            best.number,
            result["job_dir"],
            result["command"],
        )


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGTERM ends the search as Ctrl-C does, with an exception, so that its running trials are told
    failed first (Python's default would end the process on the spot). A job training in this process
    handles it first (`StopOnInterrupt`: a checkpoint, then the same exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(SIGTERM_EXIT)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def quoted(value: str) -> str:
    """A string as a value of Hydra's override grammar: as it is when it reads as a word or a path, else
    quoted (a URL may hold `=` or `?`; `2026-12-03_10-00-00` or `1` would not stay a string)."""
    if re.fullmatch(r"[A-Za-z_/][\w./:-]*", value) and value.lower() not in (
        "true",
        "false",
        "null",
        "inf",
        "nan",
    ):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def distribution(override: Override) -> Any:
    """The Optuna distribution for a search-space override: `choice`, `range`, `interval`, `tag(log, ...)`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    # The grammar's values: numbers and words, or lists and dicts, which Optuna takes with a warning.
    choices: list[Any]
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        choices = list(override.sweep_iterator())
        start, stop, step = value.start, value.stop, value.step
        if isinstance(start, int) and isinstance(stop, int) and isinstance(step, int) and step > 0:
            return IntDistribution(choices[0], choices[-1], step=step)  # a range of ints yields ints
        return CategoricalDistribution(choices)
    if isinstance(value, IntervalSweep):  # Hydra reads interval bounds as floats: use range for integers
        assert value.start is not None and value.end is not None  # the grammar's interval has both bounds
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise ValueError(f"{override.input_line}: use choice(...), range(...) or interval(...) to search")


def search_free(overrides: list[str]) -> list[str]:
    """The overrides without the choice of search (`hparams_search=...`): what a single run needs."""
    return [override for override in overrides if not override.startswith("hparams_search=")]


def recorded_study_name(sweep_dir: Path, storage: str) -> str | None:
    """The name of the study that the sweep dir already keeps in `storage` (`study.yaml`), if any."""
    with suppress(Exception):  # none, or unreadable: a new study
        recorded = OmegaConf.load(sweep_dir / STUDY_FILE)
        if isinstance(recorded, DictConfig) and recorded.get("storage") == storage:
            return str(recorded.study_name)
    return None


def trial_value(job_return: JobReturn) -> float | None:
    """The task's return value when the job finished with a finite number, else None."""
    if job_return.status != JobStatus.COMPLETED:
        return None
    value = job_return.return_value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
