"""Sweeps through Hydra's submitit launcher: local jobs for real, the SLURM preset up to its sbatch script."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import CONF_DIR, ROOT, job_dir, results
from mnist_logreg.tracking.hparams import ROW_SUFFIX


@pytest.mark.slow
def test_submitit_local_runs_each_job_in_its_own_process_with_its_outputs(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local"]
    command += ["trainer.accelerator=cpu", "+trainer.limit_train_batches=20", "trainer.max_epochs=1"]
    command += ["callbacks.progress_bar.refresh_rate=0", f"hydra.sweep.dir={tmp_path}"]
    command += ["optimizer.lr=0.1,0.5"]  # the sweep: two jobs
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output.decode()[-3000:]

    results = {}  # what each job returned to the launcher, by its sweep override
    for path in tmp_path.glob(".submitit/*/*_result.pkl"):
        outcome, job_return = pickle.loads(path.read_bytes())
        assert outcome == "success"
        results[job_return.overrides[-1]] = job_return.return_value
    assert sorted(results) == ["optimizer.lr=0.1", "optimizer.lr=0.5"]

    pids = set()
    for job, lr in ((0, 0.1), (1, 0.5)):
        out = job_dir(tmp_path, job)
        assert out.name == f"{job}_limit_train_batches-20+lr-{lr}+max_epochs-1"  # named by its overrides
        assert OmegaConf.load(out / ".hydra" / "config.yaml").optimizer.lr == lr
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] == "completed" and metrics["steps"] == 20
        assert 0.5 < metrics["test/acc"] < 1.0 and results[f"optimizer.lr={lr}"] == metrics["val/acc"]
        assert "test/acc" in (out / "train.log").read_text()
        assert (out / "checkpoints" / "best.ckpt").is_file()
        curves = [f for f in (out / "tensorboard").glob("events.out.tfevents.*") if f.suffix != ROW_SUFFIX]
        pids |= {f.name.split(".")[-2] for f in curves}
    # Two jobs, two processes, neither of them the launcher.
    assert len(pids) == 2 and str(launcher.pid) not in pids


@pytest.mark.slow
def test_a_job_submitit_requeues_continues_from_its_own_checkpoint(tmp_path: Path) -> None:
    """SLURM's signal before a time limit (USR2), sent to a local submitit job mid-epoch: the job saves,
    submitit requeues it, and it runs again in its own directory from that checkpoint, by itself. Its twin
    in the same sweep, never signalled, ends with the same numbers and weights."""
    command = [sys.executable, str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local"]
    command += ["trainer.accelerator=cpu", "trainer.max_epochs=4", "callbacks.progress_bar.refresh_rate=0"]
    command += [f"hydra.sweep.dir={tmp_path}", "seed=0,0"]  # two identical jobs
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    launcher = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    job = tmp_path / "0_seed-0+max_epochs-4"
    deadline = time.monotonic() + 120
    while not (job / "checkpoints" / "last.ckpt").exists():  # the end of epoch 0: three epochs to go
        assert time.monotonic() < deadline and launcher.poll() is None, "job 0 never saved a checkpoint"
        time.sleep(0.005)
    # The TensorBoard event file's name ends with the writing process's id: job 0's process.
    (events,) = (job / "tensorboard").glob("events.out.tfevents.*")
    os.kill(int(events.name.split(".")[-2]), signal.SIGUSR2)
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output.decode()[-3000:]

    log = (job / "train.log").read_text()
    (saved,) = re.findall(r"SIGUSR2: saved (\S+) at step (\d+); submitit requeues this job", log)
    assert saved[0] == str(job / "checkpoints" / "last.ckpt") and 550 < int(saved[1]) < 2200
    assert f"This submitit job was stopped before: continuing from {saved[0]}" in log
    assert log.count("[submitit][INFO] - Requeued job ") == 1  # submitit's own line, in the job's log
    assert "Requeued" not in (job_dir(tmp_path, 1) / "train.log").read_text()

    numbers = [results(job_dir(tmp_path, j)) for j in (0, 1)]
    assert numbers[0] == numbers[1] and numbers[0]["status"] == "completed" and numbers[0]["steps"] == 2200
    weights = [
        torch.load(job_dir(tmp_path, j) / "checkpoints" / "last.ckpt", weights_only=True) for j in (0, 1)
    ]
    assert all(torch.equal(weights[0]["state_dict"][k], v) for k, v in weights[1]["state_dict"].items())


@pytest.mark.slow
def test_slurm_preset_reaches_the_sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preset's knobs, as hydra-submitit-launcher hands them to submitit, and as submitit writes them.

    `srun` and `sbatch` are stand-ins on the PATH: submitit looks for the one before it builds the script,
    and submits the script with the other (which says "Submitted batch job 4242", as SLURM's does). The
    launch is stopped where the launcher would wait for the jobs' results.
    """
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\necho Submitted batch job 4242\n")
    for name in ("srun", "sbatch"):
        (tmp_path / "bin" / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=20"]
    overrides += ["hydra.launcher.setup=[module load cuda]", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    HydraConfig.instance().set_config(cfg)

    class Submitted(Exception):
        pass

    def stop_at_the_wait(job: submitit.Job, *args: object) -> None:
        raise Submitted(job)

    monkeypatch.setattr(submitit.Job, "results", stop_at_the_wait)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["optimizer.lr=0.1"], ["optimizer.lr=0.5"]], initial_job_idx=0)
    assert submitted.value.args[0].job_id == "4242_0"
    # The script that sbatch was given, where submitit keeps it (one per job array).
    (script_file,) = (tmp_path / "sweep" / ".submitit").glob("*/4242_submission.sh")
    script = script_file.read_text()
    for line in ("--partition=gpu", "--time=20", "--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1"):
        assert f"#SBATCH {line}\n" in script
    assert "#SBATCH --cpus-per-task=4\n" in script and "#SBATCH --mem=8GB\n" in script
    assert "#SBATCH --array=0-1%2\n" in script  # both jobs at once (array_parallelism: up to 64)
    assert "\nmodule load cuda\n" in script and "\nsrun " in script
    # The time limit's warning, on which a job saves and is requeued, up to 3 times.
    assert "#SBATCH --signal=USR2@120\n" in script and cfg.hydra.launcher.max_num_timeout == 3
