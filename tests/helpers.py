"""What tests share besides fixtures (those are in conftest.py): the repository's paths, configs composed as
the entry points compose them, an entry point run as a user runs it, a sweep's job directories and results,
and a synthetic MNIST's files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
NOT_RESULTS = ("fit_time_s", "test_time_s", "ckpt_path", "provenance")  # differ between equal runs


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
    """A run's metrics.json without what differs between two runs of the same numbers: times, paths."""
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


def hparams_row(tensorboard_dir: Path) -> tuple[dict[str, Any], Any, Any, dict[str, float]]:
    """A run's row in TensorBoard's HParams table, read as TensorBoard reads its event files: its values, its
    session (`group_name`: the Trial ID), the table's columns (an `Experiment`) and its metrics' values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    session = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    values = {key: getattr(value, value.WhichOneof("kind")) for key, value in session.hparams.items()}
    tags = [m.name.tag for m in experiment.metric_infos if m.name.tag in events.Tags()["scalars"]]
    scores = {tag: events.Scalars(tag)[-1].value for tag in tags}
    return values, session, experiment, scores
