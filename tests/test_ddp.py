"""DDP with two CPU processes (gloo) on the real MNIST files, and its refusal inside a multirun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from helpers import ROOT, job_dir
from mnist_logreg.core.data import EpochOrder, MNISTDataModule
from mnist_logreg.core.model import LogisticRegression
from mnist_logreg.errors import UserError
from mnist_logreg.runs.distributed import refuse_relaunch_in_multirun
from mnist_logreg.runs.training import train
from mnist_logreg.tracking.hparams import ROW_SUFFIX

LIMITS = ("+trainer.limit_train_batches=50", "trainer.max_epochs=1", "optimizer.lr=0.5")
# A weighted sum of the pixels stands for an image: equal images give equal sums, different ones differ.
PIXEL_WEIGHTS = torch.linspace(0.5, 1.5, 784, dtype=torch.float64)
# What `srun` sets for the first of two tasks on one node.
SRUN_RANK_0_OF_2 = {
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "n1",
    "SLURM_JOB_NAME": "train",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
}


class RecordSeenImages(L.Callback):
    """Saves, per rank, the pid and a fingerprint of every training image the rank was fed."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self.seen.append(batch[0].double() @ PIXEL_WEIGHTS)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "world_size": trainer.world_size, "seen": torch.cat(self.seen)}
        torch.save(record, self.dirpath / f"rank{trainer.global_rank}.pt")


class RecordStop(L.Callback):
    """Writes, per rank, its pid when training starts and its step when training is stopped."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        (self.dirpath / f"rank{trainer.global_rank}.pid").write_text(str(os.getpid()))

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        (self.dirpath / f"rank{trainer.global_rank}.stopped").write_text(str(trainer.global_step))


def whole_split_metrics(ckpt: Path, split: str) -> tuple[float, float]:
    """Accuracy and loss of a checkpoint on a whole split, computed here in one process."""
    model = LogisticRegression.load_from_checkpoint(ckpt).eval()
    datamodule = MNISTDataModule.load_from_checkpoint(ckpt)
    datamodule.setup()
    images, labels = datamodule.splits[split]
    with torch.no_grad():
        logits = model(images)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return accuracy, torch.nn.functional.cross_entropy(logits, labels).item()


@pytest.mark.slow
def test_two_processes_shard_the_data_reduce_metrics_and_write_once(compose_train, tmp_path: Path) -> None:
    out, seen_dir = tmp_path / "ddp", tmp_path / "seen"
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        *("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *LIMITS),
        "callbacks.progress_bar.refresh_rate=0",
        "+callbacks.seen._target_=test_ddp.RecordSeenImages",
        f"+callbacks.seen.dirpath={seen_dir}",
        f"hydra.run.dir={out}",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [torch.load(seen_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]

    # Rank 0 alone wrote the run's outputs, all in one directory.
    assert [p.relative_to(out) for p in out.rglob("metrics.json")] == [Path("metrics.json")]
    assert [p.relative_to(out) for p in out.rglob("config.yaml")] == [Path(".hydra/config.yaml")]
    # The curves' event files (the HParams row has one of its own, `*.hparams`), named by the writer's pid.
    event_files = [f for f in (out / "tensorboard").glob("events.out.tfevents.*") if f.suffix != ROW_SUFFIX]
    assert event_files and {f.name.split(".")[-2] for f in event_files} == {str(ranks[0]["pid"])}

    # Each rank was fed its own shard: the first 50 batches of its share of epoch 0's permutation.
    datamodule = MNISTDataModule(data_dir=str(ROOT / "data"))
    datamodule.setup()
    train_images = datamodule.splits["train"][0]
    for rank, record in enumerate(ranks):
        order = EpochOrder(len(train_images), shuffle=True, seed=0, rank=rank, world_size=2).indices()
        expected = train_images[order[: 50 * 100]].double() @ PIXEL_WEIGHTS
        assert torch.allclose(record["seen"], expected, rtol=0, atol=1e-9)
    assert not torch.allclose(ranks[0]["seen"], ranks[1]["seen"])

    # The logged metrics are the whole split's, not one rank's half: torchmetrics and sync_dist reduced them.
    metrics = json.loads((out / "metrics.json").read_text())
    best = Path(metrics["ckpt_path"])
    test_acc, test_loss = whole_split_metrics(best, "test")
    assert metrics["test/acc"] == pytest.approx(test_acc, abs=1e-6)
    assert metrics["test/loss"] == pytest.approx(test_loss, abs=1e-5)
    assert metrics["val/acc"] == pytest.approx(whole_split_metrics(best, "val")[0], abs=1e-6)
    assert metrics["steps"] == 50

    # In the range of one process with the same limits (DDP averages the two ranks' gradients each step).
    single = train(compose_train("trainer.accelerator=cpu", *LIMITS, "callbacks.progress_bar.refresh_rate=0"))
    assert 0.8 < single["test/acc"] < 0.95
    assert metrics["test/acc"] == pytest.approx(single["test/acc"], abs=0.03)


@pytest.mark.slow
def test_ddp_inside_a_multirun_is_refused_before_any_process_starts(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "train.py"), "-m", "trainer=ddp", "trainer.accelerator=cpu"]
    command += ["trainer.devices=2", f"hydra.sweep.dir={tmp_path}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    refusals = [line for line in result.stdout.splitlines() if "[ERROR]" in line]
    assert len(refusals) == 1 and "cannot run inside a multirun (-m)" in refusals[0]
    assert "hydra.launcher.tasks_per_node=2" in refusals[0]
    assert "Initializing distributed" not in result.stdout + result.stderr
    # The job is recorded as failed, with the reason; nothing trained.
    record = json.loads((job_dir(tmp_path, 0) / "metrics.json").read_text())
    assert record["status"] == "failed" and "cannot run inside a multirun" in record["error"]
    assert not (job_dir(tmp_path, 0) / "checkpoints").exists()


def test_processes_started_by_slurm_are_not_refused(compose_train, monkeypatch: pytest.MonkeyPatch) -> None:
    # Restored after the test, so that no other test runs as a multirun job.
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)
    cfg = compose_train("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "hydra.mode=MULTIRUN")
    with pytest.raises(UserError, match=r"trainer.devices=2 with DDP cannot run inside a multirun"):
        refuse_relaunch_in_multirun(instantiate(cfg.trainer, logger=False))
    # Under `srun` (hydra/launcher=slurm with tasks_per_node=2) Lightning starts no process itself.
    for name, value in SRUN_RANK_0_OF_2.items():
        monkeypatch.setenv(name, value)
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.strategy.cluster_environment.creates_processes_externally
    refuse_relaunch_in_multirun(trainer)


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_at_one_step_and_the_resume_is_exact(tmp_path: Path) -> None:
    """SIGTERM to rank 1 alone (SLURM signals every task, a stray `kill` one): both ranks stop after the same
    step, rank 0 saves there and the run exits 143; the same command with `ckpt_path=auto` then ends with the
    numbers and weights of a run never stopped."""
    common = [
        sys.executable,
        str(ROOT / "train.py"),
        *("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1"),
        *("+trainer.limit_train_batches=200", "+trainer.val_check_interval=50", "optimizer.lr=0.5"),
        "callbacks.progress_bar.refresh_rate=0",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    whole, termed, stops = tmp_path / "whole", tmp_path / "termed", tmp_path / "stops"
    termed_command = [*common, "ckpt_path=auto", f"hydra.run.dir={termed}"]
    record = ["+callbacks.stops._target_=test_ddp.RecordStop", f"+callbacks.stops.dirpath={stops}"]

    def start(command: list[str], log: str) -> subprocess.Popen:
        output = (tmp_path / log).open("w")
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)

    uninterrupted = start([*common, f"hydra.run.dir={whole}"], "whole.txt")
    victim = start([*termed_command, *record], "termed.txt")
    deadline = time.monotonic() + 240
    while not (termed / "checkpoints" / "last.ckpt").exists():  # step 50 of 200
        assert time.monotonic() < deadline and victim.poll() is None, (tmp_path / "termed.txt").read_text()
        time.sleep(0.005)
    os.kill(int((stops / "rank1.pid").read_text()), signal.SIGTERM)
    assert victim.wait(timeout=120) == 143, (tmp_path / "termed.txt").read_text()[-3000:]

    stopped = {int((stops / f"rank{r}.stopped").read_text()) for r in (0, 1)}
    last = termed / "checkpoints" / "last.ckpt"
    saved_at = torch.load(last, weights_only=True)["global_step"]
    assert stopped == {saved_at} and 50 <= saved_at < 200
    console = (tmp_path / "termed.txt").read_text()
    assert f"SIGTERM: stopped at step {saved_at} and saved {last}; to finish the run: python" in console
    assert console.count("SIGTERM: stopped at step") == 1  # one line for the run, from rank 0

    again = start(termed_command, "again.txt")
    for process, log in ((again, "again.txt"), (uninterrupted, "whole.txt")):
        assert process.wait(timeout=300) == 0, (tmp_path / log).read_text()[-3000:]
    times = ("fit_time_s", "test_time_s", "ckpt_path", "provenance")
    expected, resumed = (json.loads((run / "metrics.json").read_text()) for run in (whole, termed))
    assert {k: v for k, v in resumed.items() if k not in times} == {
        k: v for k, v in expected.items() if k not in times
    }
    assert expected["steps"] == 200
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in (whole, termed)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
