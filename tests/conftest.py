"""Shared fixtures: configs composed as `train.py` composes them, and a tiny synthetic MNIST on disk."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torchvision.datasets import MNIST

import services

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
NOT_RESULTS = ("fit_time_s", "test_time_s", "ckpt_path", "provenance")  # differ between equal runs


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run where torch finds a CUDA GPU; elsewhere they are skipped, with the reason."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; torch finds none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train", log_dir: Path | None = None
) -> DictConfig:
    """A config as an entry point composes it, with its outputs in `output_dir` (and the MLflow store, for
    `logger=mlflow`, in `log_dir`, if given)."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    # `${hydra:...}` interpolations read the HydraConfig that a real run sets.
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.runtime.cwd = str(ROOT)
        if log_dir is not None and "log_dir" in cfg.get("paths", {}):
            cfg.paths.log_dir = str(log_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def job_dir(sweep_dir: Path, number: int) -> Path:
    """Job `number`'s directory in a sweep: `<number>_<its overrides>` (conf/hydra/default.yaml)."""
    (found,) = [p for p in sweep_dir.glob(f"{number}_*") if p.is_dir()]
    return found


def results(run_dir: Path) -> dict:
    """A run's metrics.json without what differs between two runs of the same numbers: times, paths, and
    the provenance (its command line, for one)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in NOT_RESULTS}


def run_script(script: str, *overrides: str) -> subprocess.CompletedProcess:
    """Run an entry point (`train.py`, `eval.py`, ...) as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )


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


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a gzipped IDX file (the MNIST format): magic with dtype and rank, big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright 7x7 patch at one of ten places: linearly separable by construction."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28))
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 2 + 7 * row : 9 + 7 * row, 1 + 7 * col : 8 + 7 * col] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


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
    from mnist_logreg.training import train

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
