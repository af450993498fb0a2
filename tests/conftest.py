"""Shared fixtures: configs composed as `train.py` composes them, and a tiny synthetic MNIST on disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig
from torchvision.datasets import MNIST

import services
from helpers import ROOT, compose_config, make_digits, write_idx
from mnist_logreg.core.data import MNISTDataModule


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`pytest -n auto`), each worker and the processes its tests start get their share
    of the cores, so that N workers do not each run torch on every core at once."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        threads = max(1, (os.cpu_count() or 1) // int(workers))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True)
def fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast tier (`pytest -m "not slow"`) trains nothing, starts no process and reads no real MNIST: a
    test that does is marked `slow`, or it fails here, naming what it did."""
    if request.node.get_closest_marker("slow") is not None:
        return
    name = request.node.nodeid

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} starts a process: mark it @pytest.mark.slow")

    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    real_data = (ROOT / "data").resolve()
    read = MNISTDataModule.setup

    def no_real_mnist(self: MNISTDataModule, stage: str | None = None) -> None:
        if self.data_dir.resolve() == real_data:
            raise AssertionError(f"{name} reads the real MNIST: mark it @pytest.mark.slow")
        read(self, stage)

    monkeypatch.setattr(MNISTDataModule, "setup", no_real_mnist)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{name} trains: mark it @pytest.mark.slow")

    for stage in ("fit", "validate", "test", "predict"):
        monkeypatch.setattr(L.Trainer, stage, no_training)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run where torch finds a CUDA GPU; elsewhere they are skipped, with the reason.

    A test that needs the session's trained MNIST run (`trained_run`, set up before the fast tier's guard
    can see it) and is not marked `slow` stops the collection, naming it."""
    import torch

    unmarked = [
        item.nodeid
        for item in items
        if "trained_run" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"these train MNIST (trained_run) and are not marked slow: {unmarked}")

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch finds none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sigint_handled():
    """Ctrl-C raises KeyboardInterrupt, here and in the processes the test starts, as in a terminal. A test
    runner started in the background by a script (`pytest &`) ignores SIGINT, and so would the processes it
    starts. Put back after the test: Lightning ignores SIGINT once it has handled one."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `paths.log_dir` of the session's runs: one MLflow store for all, as a user has (creating its
    tables takes seconds)."""
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def compose_train(tmp_path: Path, mlflow_dir: Path) -> Callable[..., DictConfig]:
    """Compose `conf/train.yaml` with overrides; outputs go to `tmp_path/run`, data is the shipped MNIST."""

    def _compose(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_config(list(overrides), tmp_path / "run", config_name, log_dir=mlflow_dir)

    return _compose


@pytest.fixture
def tiny_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a 600/200-image synthetic MNIST whose MD5 sums torchvision is told to expect."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    train_x, train_y = make_digits(600, seed=1)
    test_x, test_y = make_digits(200, seed=2)
    arrays = {
        "train-images-idx3-ubyte.gz": train_x,
        "train-labels-idx1-ubyte.gz": train_y,
        "t10k-images-idx3-ubyte.gz": test_x,
        "t10k-labels-idx1-ubyte.gz": test_y,
    }
    resources = []
    for name, array in arrays.items():
        write_idx(raw / name, array)
        resources.append((name, hashlib.md5((raw / name).read_bytes()).hexdigest()))
    monkeypatch.setattr(MNIST, "resources", resources)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short training run on the real MNIST (lr 0.1, 100 batches: about 86% test accuracy), shared by
    the tests of what uses a trained checkpoint. Returns its output directory."""
    from mnist_logreg.runs.training import train

    output_dir = tmp_path_factory.mktemp("trained") / "run"
    overrides = [
        "optimizer.lr=0.1",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=100",
        "trainer.accelerator=cpu",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    train(compose_config(overrides, output_dir))
    return output_dir


# Real services, started once per session in a directory of their own under /tmp (the daemons run as other
# users, who cannot enter pytest's private temporary directory). Where their Debian packages are missing,
# the tests that need them are skipped with the command that installs them, shown in pytest's summary; in
# CI (`CI` set, as by .ci/run, which installs them) a missing service fails them instead.


@contextmanager
def service(start: contextlib.AbstractContextManager) -> Iterator:
    try:
        with start as running:
            yield running
    except services.ServiceMissing as missing:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session; its base SQLAlchemy URL, without a database."""
    with (
        tempfile.TemporaryDirectory(prefix="mnist-logreg-postgres-") as root,
        service(services.postgres_server(Path(root))) as base_url,
    ):
        yield base_url


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the session's PostgreSQL server: its SQLAlchemy URL
    (`postgresql+psycopg://postgres@127.0.0.1:<port>/<name>`)."""
    return services.create_database(postgres_server, f"test_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """A one-node SLURM cluster on localhost for the session. Returns the environment its commands need
    (`SLURM_CONF`): pass `{**os.environ, **slurm_cluster}` to `sbatch`, `squeue` and `python train.py`."""
    with (
        tempfile.TemporaryDirectory(prefix="mnist-logreg-slurm-") as root,
        service(services.slurm_cluster(Path(root))) as env,
    ):
        yield env
