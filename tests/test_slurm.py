"""Sweeps on a real one-node SLURM cluster (`slurm_cluster` in conftest.py): `hydra/launcher=slurm` as a user
runs it, through submitit, sbatch and SLURM's own scheduler."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from helpers import ROOT, job_dir, results
from mnist_logreg.sweeps.study import open_storage

# One cluster at a time on this host: with pytest-xdist, these tests share one worker (`--dist loadgroup`).
pytestmark = pytest.mark.xdist_group("slurm")

# What a CPU-only job on the test cluster asks for: one CPU each, so that the node runs several at once.
CPU_JOB = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=null", "trainer.accelerator=cpu"]
CPU_JOB += [
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "callbacks.progress_bar.refresh_rate=0",
]


def start_sweep(cluster: dict[str, str], *overrides: str) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "train.py"), "-m", *CPU_JOB, *overrides]
    env = {**os.environ, **cluster, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def running_jobs(cluster: dict[str, str]) -> list[str]:
    """The ids of the jobs SLURM says are running (array tasks as `<job>_<index>`)."""
    squeue = ["squeue", "--noheader", "--states=RUNNING", "--format=%i"]
    out = subprocess.run(squeue, env={**os.environ, **cluster}, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.slow
def test_an_optuna_search_keeps_several_trials_running_together(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    """`hparams_search=optuna hydra/launcher=slurm`: the sweeper asks for as many trials as the launcher's
    `array_parallelism` allows and submits them as one job array, which the two-CPU node runs together."""
    launcher = start_sweep(
        slurm_cluster,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=20",
        "+trainer.limit_val_batches=1",
        "test=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    most_running = 0
    while launcher.poll() is None:
        most_running = max(most_running, len(running_jobs(slurm_cluster)))
        time.sleep(0.05)
    output, _ = launcher.communicate()
    assert launcher.returncode == 0, output.decode()[-3000:]
    assert most_running == 2
    name = str(OmegaConf.load(tmp_path / "study.yaml").study_name)
    study = optuna.load_study(study_name=name, storage=open_storage(str(tmp_path / "study.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:
        metrics = json.loads((job_dir(tmp_path, trial.number) / "metrics.json").read_text())
        assert metrics["study"] == name and metrics["trial"] == trial.number
        assert metrics["val/acc"] == pytest.approx(trial.value) and metrics["steps"] == 20


@pytest.mark.slow
def test_a_job_past_its_time_limit_warning_is_requeued_and_resumes_exactly(
    slurm_cluster: dict[str, str], tmp_path: Path
) -> None:
    """Two identical jobs of one sweep run together on the node. Job 0 gets SLURM's warning signal mid-epoch,
    as at a time limit: it saves, submitit requeues it (`scontrol requeue`), SLURM starts it again, and it
    continues from its checkpoint to the numbers of job 1, which was never signalled.

    The signal is sent with `scancel --signal=USR2`, SLURM's delivery of what its time-limit check sends
    `signal_delay_s` before the limit: that check runs every 30 s, too coarse to land mid-training in a
    short test. `timeout_min=10` makes submitit count the signal as a time limit (it comes within 10 minutes
    of the limit), as it would at the real one."""
    launcher = start_sweep(
        slurm_cluster,
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=200",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={tmp_path}",
        "seed=0,0",  # two identical jobs
    )
    most_running = 0
    deadline = time.monotonic() + 120
    # Until the end of epoch 0 (two epochs to go) in job 0's directory, `0_<its overrides>`.
    while not any(tmp_path.glob("0_*/checkpoints/last.ckpt")):
        assert time.monotonic() < deadline and launcher.poll() is None, "job 0 never saved a checkpoint"
        most_running = max(most_running, len(running_jobs(slurm_cluster)))
        time.sleep(0.05)
    job = job_dir(tmp_path, 0)
    (array_id,) = [d.name for d in (tmp_path / ".submitit").iterdir() if d.name.isdigit()]
    subprocess.run(
        ["scancel", "--signal=USR2", f"{array_id}_0"], env={**os.environ, **slurm_cluster}, check=True
    )
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output.decode()[-3000:]
    assert most_running == 2  # both jobs of the sweep at once

    log = (job / "train.log").read_text()
    (saved,) = re.findall(r"SIGUSR2: saved (\S+) at step (\d+); submitit requeues this job", log)
    assert saved[0] == str(job / "checkpoints" / "last.ckpt") and 200 < int(saved[1]) < 600
    assert "this job is timed-out" in log  # submitit's count: a time limit, not a preemption
    assert log.count(f"[submitit][INFO] - Requeued job {array_id}_0 (2 remaining timeouts)") == 1
    assert f"This submitit job was stopped before: continuing from {saved[0]}" in log
    assert "Requeued" not in (job_dir(tmp_path, 1) / "train.log").read_text()
    show = ["scontrol", "show", "job", f"{array_id}_0"]  # SLURM's own record: the job ran a second time
    record = subprocess.run(show, env={**os.environ, **slurm_cluster}, capture_output=True, text=True).stdout
    assert "Restarts=1 " in record, record

    numbers = [results(job_dir(tmp_path, j)) for j in (0, 1)]
    assert numbers[0] == numbers[1] and numbers[0]["status"] == "completed" and numbers[0]["steps"] == 600
