"""How one Optuna study scales with its workers, per storage: K = 1, 2, 4, 8 worker processes of near-empty
trials against a journal file, SQLite and PostgreSQL.

    python benchmarks/storage_scaling.py [--trials 200] [--work-s 0.05] [--workers 1 2 4 8]
                                         [--postgres postgresql+psycopg://user@host/db]

Each worker runs the search loop of `hparams_search=optuna` against the shared study, one trial at a time:
look for lost trials, count the study's finished trials, ask for the next trial's four parameters (TPE,
constant liar, seeded per worker), stamp its heartbeat and job directory, "train" for `--work-s` seconds (a
sleep: a trial's work happens on its own node), tell the value. It stops once the study has `--trials`
finished trials. Reported per storage and K: trials per second over the whole study, and the storage's
share of a trial's time (time inside the storage object's methods / wall time of the trial loop, summed over
workers). Without `--postgres`, a throwaway PostgreSQL server (fsync on) is started as the tests start one
(`tests/services.py`; Debian's `postgresql`).

The workers share this machine's cores: their samplers compete for CPU here, as they would not on K nodes.
"""

from __future__ import annotations

import argparse
import inspect
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_logreg.sweeps.study import JOURNAL_SUFFIX, SQLITE_TIMEOUT_S  # noqa: E402

SPACE = {
    "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
    "optimizer.momentum": optuna.distributions.FloatDistribution(0.0, 0.95),
    "optimizer.weight_decay": optuna.distributions.FloatDistribution(1e-7, 1e-2, log=True),
    "data.batch_size": optuna.distributions.CategoricalDistribution([50, 100, 200, 500, 1000]),
}


def timed(storage_class: type[BaseStorage]) -> type[BaseStorage]:
    """A subclass of `storage_class` that adds the time spent in its methods to `seconds` (every method of
    the class and its bases; the outermost call only, so that a method calling another counts once)."""

    def wrap(name: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            self.depth = getattr(self, "depth", 0) + 1
            started = time.perf_counter()
            try:
                return getattr(super(subclass, self), name)(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds = getattr(self, "seconds", 0.0) + time.perf_counter() - started

        return method

    names = {
        name
        for klass in storage_class.__mro__
        for name, value in vars(klass).items()
        if inspect.isfunction(value) and not name.startswith("__")
    }
    subclass = type(f"Timed{storage_class.__name__}", (storage_class,), {name: wrap(name) for name in names})
    return subclass


def open_storage(url: str) -> BaseStorage:
    """As the sweeper opens it (`mnist_logreg.sweeps.study.open_storage`), timed."""
    if url.endswith(JOURNAL_SUFFIX):
        return timed(JournalStorage)(JournalFileBackend(url))
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.startswith("sqlite") else {}
    return timed(RDBStorage)(url, engine_kwargs=engine_kwargs)


def worker(url: str, name: str, index: int, n_trials: int, work_s: float, start: Any, out: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    sampler = optuna.samplers.TPESampler(seed=index, constant_liar=True)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    start.wait()
    storage.seconds, trials, started = 0.0, 0, time.perf_counter()
    while True:
        study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))  # lost trials of other workers?
        if sum(t.state.is_finished() for t in study.get_trials(deepcopy=False)) >= n_trials:
            break
        trial = study.ask(SPACE)
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("job_dir", f"/sweep/{trial.number}")
        time.sleep(work_s)
        study.tell(trial, trial.params["optimizer.lr"])
        trials += 1
    loop_s = time.perf_counter() - started
    out.put((trials, loop_s, storage.seconds))


def run(url: str, k: int, n_trials: int, work_s: float) -> tuple[float, float, float, int]:
    """K workers on a fresh study: trials per second, the storage's share of a trial's time, the storage's
    seconds per trial, trials told."""
    name = f"scaling-{k}-{time.monotonic_ns()}"
    optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    processes = [
        context.Process(target=worker, args=(url, name, i, n_trials, work_s, start, out)) for i in range(k)
    ]
    for process in processes:
        process.start()
    time.sleep(1.0)  # every worker has loaded the study
    started = time.perf_counter()
    start.set()
    results = [out.get() for _ in processes]
    wall = time.perf_counter() - started
    for process in processes:
        process.join()
    told, loop_s, storage_s = (sum(column) for column in zip(*results, strict=True))
    return told / wall, storage_s / loop_s, storage_s / told, told


def fsync_ms(directory: Path, rounds: int = 50) -> float:
    """The median time to append a line to a file and sync it, in ms: what the journal file and SQLite wait
    for on every write, and what moves their numbers most from one machine (or moment) to another."""
    times = []
    with open(directory / "fsync.probe", "ab") as f:
        for _ in range(rounds):
            started = time.perf_counter()
            f.write(b"x" * 200 + b"\n")
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=200, help="finished trials per study")
    parser.add_argument("--work-s", type=float, default=0.05, help="each trial's work, in seconds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--postgres", help="a PostgreSQL database URL; default: start a throwaway server")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="storage-scaling-")))
        postgres = args.postgres
        if postgres is None:
            sys.path.insert(0, str(ROOT / "tests"))
            import services

            server_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="storage-scaling-postgres-"))
            # fsync on, as a server that keeps a study should be (the journal file and SQLite sync too).
            base = stack.enter_context(services.postgres_server(Path(server_dir), fsync=True))
            postgres = services.create_database(base, "scaling")
        storages = {"journal file": str(tmp / "study.journal"), "SQLite": f"sqlite:///{tmp / 'study.db'}"}
        storages["PostgreSQL"] = postgres
        print(f"{args.trials} trials per study, {args.work_s * 1000:.0f} ms of work each")
        print(f"appending a line to a file and syncing it: {fsync_ms(tmp):.2f} ms (median)\n")
        print("| storage | K | trials/s | storage share of a trial | storage ms per trial | trials told |")
        print("| --- | --- | --- | --- | --- | --- |")
        for label, url in storages.items():
            for k in args.workers:
                rate, share, storage_s, told = run(url, k, args.trials, args.work_s)
                print(
                    f"| {label} | {k} | {rate:.1f} | {share:.0%} | {storage_s * 1000:.0f} | {told} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
