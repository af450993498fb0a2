"""The liveness of a search shared by many workers: each worker stamps its running trials with a heartbeat,
and fails (and tries again, once) the trials of workers that stopped stamping theirs: a worker killed
outright, or a lost node. Optuna's own heartbeat lives in `study.optimize`, for RDB storages only; this works
with ask-and-tell and every storage, the journal file included."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from mnist_logreg.errors import one_line
from mnist_logreg.sweeps.study import HEARTBEAT, RETRY_OF

log = logging.getLogger(__name__)


def count_trials(study: Any) -> tuple[int, int]:
    """The study's finished trials (those of lost workers, retried, left out) and its running ones."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF] for t in trials if RETRY_OF in t.user_attrs}
    finished = sum(t.state.is_finished() and t.number not in retried for t in trials)
    return finished, sum(t.state == TrialState.RUNNING for t in trials)


def fail_lost_trials(study: Any, mine: dict[int, Any], grace_period_s: float) -> None:
    """Fail the running trials of other workers whose heartbeat is older than `grace_period_s` (a worker
    killed outright, or a lost node), and enqueue their parameters once, to be tried again."""
    from optuna.trial import TrialState

    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        seen = trial.user_attrs.get(HEARTBEAT, trial.datetime_start.timestamp())
        if trial.number in mine or now - seen <= grace_period_s:
            continue
        try:
            study.tell(trial.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # another worker (or this one's heartbeat thread) was first
            continue
        again = RETRY_OF not in trial.user_attrs  # a retry that is lost too is not tried a third time
        if again:
            study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        log.warning(
            "Trial %d: no sign of life from its worker for %.0f s, told as failed%s",
            trial.number,
            now - seen,
            "; its parameters are tried again" if again else "",
        )


@contextmanager
def heartbeat(study: Any, running: dict[int, Any], grace_period_s: float) -> Iterator[None]:
    """A thread that, every quarter of the grace period, stamps each trial running here with the time (the
    sign of life other workers check) and fails other workers' lost trials, while this worker's own wait
    for the launcher. Optuna's own heartbeat lives in `study.optimize`, for RDB storages only; this works
    with ask-and-tell and every storage."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(grace_period_s / 4):
            for trial in list(running.values()):
                # Told meanwhile, or the storage briefly busy: the next beat tries again.
                with suppress(Exception):
                    trial.set_user_attr(HEARTBEAT, time.time())
            try:
                fail_lost_trials(study, running, grace_period_s)
            except Exception as error:
                log.warning("Could not check the study for lost trials: %s", one_line(error))

    thread = threading.Thread(target=beat, name="optuna-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
