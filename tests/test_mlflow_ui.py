"""The MLflow UI reads the runs the client wrote, in the order the README gives: `.[mlflow]`, runs, then
`.[mlflow-ui]` and `mlflow ui` on the store. Client and UI must be one version: a client migrates the store to
its own schema, and an older UI then refuses it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest
from packaging.requirements import Requirement

import services
from helpers import ROOT, compose_config
from mnist_logreg.runs.training import train

UI_VENV = ROOT / ".venv-mlflow-ui"  # where .ci/run installs the mlflow-ui extra's mlflow
INSTALL = (
    f"python3 -m venv {UI_VENV.name}, then pip install there the mlflow the mlflow-ui extra pins (.ci/run)"
)


def extra_pins() -> dict[str, str]:
    """The exact versions that the mlflow and mlflow-ui extras pin, by package."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {}
    for requirement in map(Requirement, extras["mlflow"] + extras["mlflow-ui"]):
        if requirement.name.startswith("mlflow"):
            (spec,) = requirement.specifier
            assert spec.operator == "==", (
                f"{requirement}: an exact pin keeps the client and the UI at one version"
            )
            pins[requirement.name] = spec.version
    return pins


def test_the_client_and_the_ui_are_pinned_to_one_version() -> None:
    pins = extra_pins()
    assert set(pins) == {"mlflow-skinny", "mlflow"} and pins["mlflow-skinny"] == pins["mlflow"]


def find_ui() -> list[str]:
    """`mlflow` of the full package: this environment's if it has it, else the one .ci/run installs."""
    with_ui = shutil.which("mlflow", path=str(Path(sys.executable).parent))
    try:
        importlib.metadata.version("mlflow")
        if with_ui:
            return [with_ui]
    except importlib.metadata.PackageNotFoundError:
        pass
    if (UI_VENV / "bin" / "mlflow").exists():
        return [str(UI_VENV / "bin" / "mlflow")]
    raise services.ServiceMissing(f"the MLflow UI is not installed: {INSTALL}")


@pytest.fixture
def ui_command() -> list[str]:
    """As the other services: where the UI is missing, skipped with the command that installs it; in CI
    (`CI` set, as by .ci/run, which installs it) failed."""
    try:
        return find_ui()
    except services.ServiceMissing as missing:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(missing))


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_the_ui_lists_the_runs_the_client_wrote(
    tmp_path: Path, tiny_mnist: Path, ui_command: list[str]
) -> None:
    command = ui_command
    ui_version = subprocess.run([*command, "--version"], capture_output=True, text=True, check=True).stdout
    client_version = importlib.metadata.version("mlflow-skinny")
    assert ui_version.split()[-1] == client_version == extra_pins()["mlflow"], (
        f"UI {ui_version.split()[-1]}, client {client_version}: pip install -e '.[dev]' pins the client"
    )

    # Runs first, written by this environment's client (as train.py writes them), then the UI on the store.
    logs = tmp_path / "logs"
    overrides = [
        f"data.data_dir={tiny_mnist}",
        "data.val_size=100",
        "data.batch_size=50",
        "trainer.max_epochs=1",
    ]
    overrides += ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0", "logger=mlflow"]
    cfg = compose_config([*overrides, "optimizer.lr=0.05"], tmp_path / "lr-0.05", log_dir=logs)
    metrics = train(cfg)

    port = services.free_port()
    log = tmp_path / "ui.log"
    store = f"sqlite:///{logs / 'mlflow.db'}"
    with log.open("w") as out:
        ui = subprocess.Popen(
            [
                *command,
                "ui",
                "--backend-store-uri",
                store,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its worker too is stopped with it (one: 4, the default, start slower)
            env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # Up to 2 minutes: a busy 2-core machine took 110 s to start the UI once.
        services.wait_for(
            lambda: answers(f"{base}/health") or ui.poll() is not None, "the MLflow UI", log, 180
        )
        assert ui.poll() is None, log.read_text()[-3000:]
        name = quote(cfg.logger.mlflow.experiment_name)
        by_name = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name={name}"
        experiment = call(by_name)["experiment"]
        found = call(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)
    (run,) = found["runs"]
    assert run["info"]["run_name"] == "lr-0.05" and run["info"]["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["optimizer/lr"] == "0.05" and params["optimizer"] == "sgd"
    logged = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert logged["val/acc_best"] == pytest.approx(metrics["val/acc"])
