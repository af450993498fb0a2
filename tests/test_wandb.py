"""`logger=wandb`: an offline W&B run in the run directory, written without a connection to anything."""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT


def history_holds(record: bytes, key: str, value: float) -> bool:
    """Whether wandb's run file logged `key` = `value`: a history item is protobuf, the key (field 2) then
    its value as JSON (field 16, tag bytes 0x82 0x01), each after its length byte."""
    item = rb"\x12." + re.escape(key.encode()) + rb"\x82\x01." + re.escape(json.dumps(value).encode())
    return re.search(item, record, re.DOTALL) is not None


def read_records(path: Path) -> list[Any]:
    """The records of a `.wandb` run file, as `wandb.proto` messages. The file is LevelDB's log format under
    W&B's 7-byte header: 32 KiB blocks of chunks, each with a 7-byte header (checksum, length, type: 1 a
    whole record, 2 to 4 its first, middle and last parts)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32 * 1024
    assert data[:4] == b":W&B"
    records, pending, at = [], b"", 7
    while at + 7 <= len(data):
        if block - at % block < 7:  # a block's tail too short for a header is padding
            at += block - at % block
            continue
        length, kind = struct.unpack("<HB", data[at + 4 : at + 7])
        if kind == 0:  # zeros: the end of what was written
            break
        pending += data[at + 7 : at + 7 + length]
        at += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def run_values(records: list[Any], kind: str) -> dict[str, Any]:
    """The config (`kind="config"`) or summary (`"summary"`) the run's records set, last value wins."""
    values = {}
    for record in records:
        items = (
            record.run.config.update if record.WhichOneof("record_type") == "run" and kind == "config" else []
        )
        if record.WhichOneof("record_type") == kind:
            items = getattr(record, kind).update
        values.update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return values


@pytest.mark.slow
def test_a_run_is_written_offline_into_its_directory(tmp_path: Path) -> None:
    # W&B's address, pointed at a port on this machine that listens and records any connection.
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    home = tmp_path / "home"  # wandb's cache and settings, here rather than in the user's home
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "WANDB_BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}",
        "WANDB_CACHE_DIR": str(home / "cache"),
        "WANDB_CONFIG_DIR": str(home / "config"),
        "WANDB_DATA_DIR": str(home / "data"),
    }
    env.pop("WANDB_MODE", None)  # offline because the config says so
    env.pop("WANDB_API_KEY", None)
    out = tmp_path / "lr-0.5_2026-12-03"  # as a run directory is named: the run's name in W&B too
    overrides = [
        "logger=wandb",
        "optimizer.lr=0.5",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=10",
    ]
    overrides += ["+trainer.limit_val_batches=2", "test=false", "callbacks.progress_bar=null"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={out}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with pytest.raises(BlockingIOError):
        server.accept()  # nobody called
    server.close()

    (run_dir,) = (out / "wandb").glob("offline-run-*")  # what `wandb sync` uploads
    assert f"wandb sync {run_dir}" in result.stdout + result.stderr
    record_path = run_dir / f"run-{run_dir.name.rsplit('-', 1)[1]}.wandb"
    record = record_path.read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and history_holds(record, "val/acc", metrics["val/acc"])
    assert out.name.encode() in record  # the run's display name

    # The flattened config, as MLflow's params: runs compare by any setting, an override's value included.
    config = run_values(read_records(record_path), "config")
    assert config["optimizer/lr"] == 0.5 and config["optimizer"] == "sgd" and config["scheduler"] == "none"
    assert config["trainer/max_epochs"] == 1 and config["data/batch_size"] == 100 and config["seed"] == 0
    assert not any(key.startswith("paths/") for key in config)
    # The final metrics of metrics.json in the summary (val/acc as the tested checkpoint's, as in MLflow).
    summary = run_values(read_records(record_path), "summary")
    assert summary["val/acc_best"] == pytest.approx(metrics["val/acc"])
    assert summary["epochs"] == 1 and summary["status"] == "completed"
    # What made the run: in its config, and the commit in W&B's own git fields.
    commit = metrics["provenance"]["code"]["commit"]
    assert commit != "unknown" and commit.encode() in record and b"provenance" in record
