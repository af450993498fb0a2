"""One writer per run directory (`runs.run_lock`): a second process is refused while the first lives,
and a process killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, run_script
from mnist_logreg.outputs import LOCK
from mnist_logreg.runs.run_lock import RunDirectoryInUse, run_directory_lock


def test_a_held_directory_is_refused_until_its_holder_lets_go(tmp_path: Path) -> None:
    with run_directory_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == f"{os.getpid()}\n"
        refused = pytest.raises(RunDirectoryInUse, match=f"^{tmp_path} is in use by process {os.getpid()}: ")
        with refused, run_directory_lock(tmp_path):
            pass
    with run_directory_lock(tmp_path):  # let go: free again, the file left behind holds no lock
        pass


@pytest.mark.slow
def test_a_second_run_on_a_live_run_directory_is_refused_and_a_killed_run_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = ["trainer.accelerator=cpu", "trainer.max_epochs=2", "+trainer.limit_train_batches=100"]
    command += ["ckpt_path=auto", "callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(tmp_path / "first.out", "w") as out:
        first = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *command], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.ckpt").exists():  # the end of epoch 0
            alive = time.monotonic() < deadline and first.poll() is None
            assert alive, f"the first run never saved: {(tmp_path / 'first.out').read_text()[-3000:]}"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # alive, holding the directory, using no CPU

        second = run_script("train.py", *command)
        assert second.returncode == 2
        (line,) = (second.stdout + second.stderr).strip().splitlines()
        assert line.endswith(
            f"{run_dir} is in use by process {first.pid}: wait for it to end (or stop it), "
            "or give this run a directory of its own (hydra.run.dir=...)"
        )
    finally:
        first.kill()  # SIGKILL: no handler runs, the kernel lets go of the lock
        first.wait()
    assert not (run_dir / "metrics.json").exists()

    resumed = run_script("train.py", *command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    assert f"ckpt_path=auto: resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2 and metrics["steps"] == 200
