"""A Hydra sweeper that searches with Optuna: `python train.py -m hparams_search=optuna`.

Why not the published `hydra-optuna-sweeper`: its latest release (1.3.0) requires `optuna<3`, so it cannot
be installed beside a current Optuna, and it builds on distribution classes Optuna 3 deprecated. This sweeper
keeps its search-space syntax (Hydra's override grammar) and drives a current Optuna through ask-and-tell:

    optimizer.lr: tag(log, interval(1e-4, 1.0))    a float, sampled on a log scale
    optimizer.momentum: interval(0.0, 0.95)        a float
    trainer.max_epochs: range(1, 10)               an integer, 1 to 9
    data.batch_size: choice(100, 250, 500)         one of these

Trials run through the configured launcher, `n_jobs` at a time (`hydra/launcher=joblib` runs them in
parallel). A trial that fails or returns no finite value is told to Optuna as failed and the search goes
on. The best parameters are printed and written to `best_params.yaml` in the sweep dir, and Optuna's own
plots of the search to `plots/`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.errors import one_line

log = logging.getLogger(__name__)

_ABSENT = object()


class OptunaSweeper(Sweeper):
    """Run `n_trials` trials, asking Optuna for each one's parameters and telling it the task's return value.

    `params` maps an override key to a search-space expression; search-space overrides on the command line
    are added to it (and win), plain overrides are passed to every trial. `storage` (an Optuna URL such as
    `sqlite:///search.db`) with `study_name` keeps a study across invocations.
    """

    def __init__(
        self,
        n_trials: int = 20,
        n_jobs: int = 1,
        direction: str = "maximize",
        sampler: Any = None,
        storage: str | None = None,
        study_name: str | None = None,
        params: dict[str, str] | None = None,
    ) -> None:
        self.n_trials = n_trials
        # As joblib counts: -1 is every core, -2 all but one.
        self.n_jobs = n_jobs if n_jobs >= 1 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
        self.direction = direction
        self.sampler = sampler
        self.storage = storage
        self.study_name = study_name
        self.params = dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna  # here, not at the top: Hydra imports this module on every run, sweep or not

        from mnist_logreg.sweep_plots import optuna_plots

        optuna.logging.disable_default_handler()  # Optuna's lines go to the sweep's log, formatted alike
        optuna.logging.enable_propagation()
        space, fixed = self._search_space(arguments)
        study = optuna.create_study(
            direction=self.direction,
            sampler=self.sampler,
            storage=self.storage,
            study_name=self.study_name,
            load_if_exists=True,
        )
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info("Optuna search: %d trials, %s %s", self.n_trials, self.direction, self._metric)

        jobs: dict[int, int] = {}  # trial number -> job number (its directory)
        asked = launched = 0
        while asked < self.n_trials:
            trials, batch = [], []
            for _ in range(min(self.n_jobs, self.n_trials - asked)):
                trial = study.ask(space)
                asked += 1
                overrides = fixed + [f"{key}={value}" for key, value in trial.params.items()]
                try:
                    self.validate_batch_is_legal([overrides])
                except Exception as error:  # e.g. momentum drawn for optimizer=adam, which has none
                    log.warning(
                        "Trial %d cannot be composed, told as failed: %s", trial.number, one_line(error)
                    )
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                trials.append(trial)
                batch.append(overrides)
            if not batch:
                continue
            returns = self.launcher.launch(batch, initial_job_idx=launched)
            for trial, job_return in zip(trials, returns, strict=True):
                jobs[trial.number] = launched
                launched += 1
                value = trial_value(job_return)
                if value is None:
                    log.warning("Trial %d (job %d) failed or gave no value", trial.number, jobs[trial.number])
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                else:
                    study.tell(trial, value)
        self._report_best(study, fixed, jobs, sweep_dir)
        optuna_plots(study, sweep_dir)  # beside the sweep's own plots (`mnist_logreg.sweep_plots`)

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
        return space, fixed

    def _has(self, key: str) -> bool:
        if key.startswith("+") or OmegaConf.select(self.config, key, default=_ABSENT) is not _ABSENT:
            return True
        log.info("Not searching %s: the config has no such key", key)
        return False

    def _report_best(self, study: Any, fixed: list[str], jobs: dict[int, int], sweep_dir: Path) -> None:
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
            "job": jobs.get(best.number),  # None: a trial from an earlier invocation of a stored study
            "command": " ".join(["python train.py", *search_free(fixed), *overrides]),
            "trials": {"completed": len(completed), "total": len(study.trials)},
        }
        OmegaConf.save(OmegaConf.create(result), sweep_dir / "best_params.yaml")
        log.info(
            "Best trial: %s %.4f with %s (%s)\n  %s",
            self._metric,
            best.value,
            " ".join(overrides),
            "an earlier invocation" if result["job"] is None else f"job {result['job']}",
            result["command"],
        )


def distribution(override: Override) -> Any:
    """The Optuna distribution for a search-space override: `choice`, `range`, `interval`, `tag(log, ...)`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(value.list))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)) and value.step > 0:
            return IntDistribution(values[0], values[-1], step=value.step)
        return CategoricalDistribution(values)
    if isinstance(value, IntervalSweep):  # Hydra reads interval bounds as floats: use range for integers
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    raise ValueError(f"{override.input_line}: use choice(...), range(...) or interval(...) to search")


def search_free(overrides: list[str]) -> list[str]:
    """The overrides without the choice of search (`hparams_search=...`): what a single run needs."""
    return [override for override in overrides if not override.startswith("hparams_search=")]


def trial_value(job_return: JobReturn) -> float | None:
    """The task's return value when the job finished with a finite number, else None."""
    if job_return.status != JobStatus.COMPLETED:
        return None
    value = job_return.return_value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None
