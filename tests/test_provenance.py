"""What made a run (its provenance), running it again (`reproduce.py`), one run per directory, and the
README's resume line. One short run on the real MNIST, stopped by Ctrl-C and finished by the README's line,
serves every test that needs a recorded run: 2 training processes in all (the resume, and the run again)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from helpers import NOT_RESULTS, ROOT, compose_config
from mnist_logreg.runs.overrides import with_run_overrides
from mnist_logreg.runs.reproduction import differences
from mnist_logreg.runs.run_lock import OneRunPerDirectory, refusal, sweep_refusal
from mnist_logreg.runs.training import train
from mnist_logreg.tracking.provenance import code_version

SHORT = (
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=20",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "trainer.accelerator=cpu",
    "callbacks.progress_bar=null",
    "callbacks.figures=null",
    "logger=csv",
)
STOP_AT = 25  # a Ctrl-C in the second epoch: `last.ckpt` at step 26, mid-epoch


class CtrlCOnce(L.Callback):
    """Sends this process SIGINT at `step`, once: a run given the same overrides again is not stopped."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


def start(script: str, *arguments: str) -> subprocess.CompletedProcess:
    """An entry point in a fresh process, with Ctrl-C as in a terminal (a test runner started in the
    background ignores SIGINT, and so would its children)."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *arguments],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def readme_resume_line() -> str:
    """The README's command that resumes `$RUN`."""
    (line,) = [line for line in (ROOT / "README.md").read_text().splitlines() if "# resume it" in line]
    return line.split(" # ")[0].strip()


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A run stopped by Ctrl-C, then finished by the README's resume line (in a process of its own): its
    directory and the resume's output."""
    run = tmp_path_factory.mktemp("provenance") / "run"
    overrides = [
        *SHORT,
        "+callbacks.stop._target_=test_provenance.CtrlCOnce",
        f"+callbacks.stop.step={STOP_AT}",
    ]
    overrides.append(f"+callbacks.stop.marker={run.parent / 'stopped-once'}")
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")  # as Hydra writes it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as in a terminal
    try:
        with pytest.raises(SystemExit) as stopped:
            train(compose_config(overrides, run))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.code == 1 and not (run / "metrics.json").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STOP_AT + 1
    words = shlex.split(readme_resume_line().replace("$RUN", str(run)))
    return {"run": run, "resumed": start(words[1], *words[2:])}


@pytest.mark.slow
def test_the_readme_resume_line_finishes_a_stopped_run_as_an_uninterrupted_one(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    run, resumed = finished["run"], finished["resumed"]
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"ckpt_path=auto: resuming from {run / 'checkpoints' / 'last.ckpt'}" in resumed.stdout
    assert "other settings" not in resumed.stdout  # its own overrides, all of them
    whole = train(compose_config(list(SHORT), tmp_path / "whole"))  # never stopped
    record = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in record.items() if k not in NOT_RESULTS} == {
        k: v for k, v in whole.items() if k not in NOT_RESULTS
    }
    assert record["steps"] == 40 and record["epochs"] == 2
    last = [
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in (run, tmp_path / "whole")
    ]
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[1])


@pytest.mark.slow
def test_a_resume_with_other_settings_says_so_in_one_line(
    finished: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's former line, `ckpt_path=$RUN/checkpoints/last.ckpt` without the run's overrides."""
    last = finished["run"] / "checkpoints" / "last.ckpt"
    others = [o for o in SHORT if not o.startswith("trainer.max_epochs")]
    train(compose_config([*others, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "other"))
    (line,) = [r.getMessage() for r in caplog.records if "other settings" in r.getMessage()]
    assert line.startswith(
        f"Resuming with other settings than the run that wrote {last}: trainer.max_epochs=3"
    )
    assert line.endswith(
        f"hydra.run.dir={finished['run']} ckpt_path=auto` resumes it with its own, in its own directory"
    )


@pytest.mark.slow
def test_a_run_records_what_made_it(finished: dict[str, Any]) -> None:
    run = finished["run"]
    provenance = json.loads((run / "metrics.json").read_text())["provenance"]
    code = provenance["code"]
    assert code["commit"] == git("rev-parse", "HEAD").strip()
    assert code["branch"] == (git("branch", "--show-current").strip() or None)
    assert code["modified"] == bool(git("status", "--porcelain"))
    assert (run / "code.patch").is_file() == code["modified"]
    assert provenance["command"].startswith("python ") and f"hydra.run.dir={run}" in provenance["command"]
    assert (
        provenance["packages"]["torch"] == torch.__version__
        and provenance["python"] == sys.version.split()[0]
    )
    assert f"lightning=={L.__version__}\n" in (run / "environment.txt").read_text()
    md5sums = (ROOT / "data" / "MNIST" / "raw" / "MD5SUMS").read_text().split()
    assert provenance["data"] == {
        f"MNIST/raw/{name}": f"md5:{md5}" for md5, name in zip(md5sums[::2], md5sums[1::2], strict=True)
    }
    assert provenance["host"]["threads"] == 1 and provenance["host"]["cores"] == os.cpu_count()
    assert ("gpu" in provenance["host"]) == torch.cuda.is_available()


@pytest.mark.slow
def test_reproduce_exits_0_on_a_recorded_run_and_1_on_an_edited_record(
    finished: dict[str, Any], tmp_path: Path
) -> None:
    """The run was stopped and resumed; run again from its overrides in a new directory, it starts afresh and
    is not stopped (its Ctrl-C came once), and ends with the same numbers."""
    again = start("reproduce.py", f"run={finished['run']}", f"hydra.run.dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "reproduced exactly: status, seed, val/acc, epochs, steps, test/" in again.stdout

    edited = tmp_path / "edited"
    shutil.copytree(finished["run"], edited)
    record = json.loads((edited / "metrics.json").read_text())
    (edited / "metrics.json").write_text(json.dumps({**record, "test/acc": record["test/acc"] + 0.01}))
    # Compared with the run made above, instead of running it a third time.
    failed = start(
        "reproduce.py", f"run={edited}", f"again={tmp_path / 'again'}", f"hydra.run.dir={tmp_path}"
    )
    assert failed.returncode == 1
    assert re.search(r"\b1 of \d+ recorded values differ", failed.stdout), failed.stdout[-2000:]
    assert re.search(r"test/acc: recorded [\d.]+, now [\d.]+ \(difference -0\.01\b", failed.stdout), (
        failed.stdout
    )


@pytest.mark.slow
def test_a_new_run_into_a_finished_runs_directory_is_refused_and_the_record_kept(
    finished: dict[str, Any],
) -> None:
    run = finished["run"]
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    refused = start("train.py", "trainer.max_epochs=1", f"hydra.run.dir={run}")
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"{run} holds a finished run (completed, metrics.json), kept as it is: continue it with `python "
        f"train.py hydra.run.dir={run} ckpt_path=auto` (and a larger trainer.max_epochs), or train afresh "
        "in a new directory (leave out hydra.run.dir)"
    )
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # metrics.json, .hydra/...


def test_a_basic_sweep_into_a_sweep_dir_with_finished_jobs_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    assert sweep_refusal(sweep) is None  # not there yet
    for job, status in (("0_seed-1", "failed"), ("1_seed-2", "interrupted")):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "metrics.json").write_text(json.dumps({"status": status}))
    (sweep / "plots").mkdir()
    assert sweep_refusal(sweep) is None  # nothing finished: its jobs may be run again
    (sweep / "2_seed-3").mkdir()
    (sweep / "2_seed-3" / "metrics.json").write_text(json.dumps({"status": "completed"}))
    expected = (
        f"{sweep} holds a finished sweep (1 finished job, 2_seed-3 first), kept as it is: sweep into a new "
        "directory (leave out hydra.sweep.dir)"
    )
    assert sweep_refusal(sweep) == expected
    for search, refused in (([], True), (["hparams_search=optuna"], False)):
        cfg = compose_config([*search, f"hydra.sweep.dir={sweep}"], tmp_path / "run")
        with open_dict(cfg):
            cfg.hydra = HydraConfig.get()  # the callback is handed the config with its `hydra` node
        if refused:
            with pytest.raises(SystemExit) as stop:
                OneRunPerDirectory().on_multirun_start(cfg)
            assert stop.value.code == 2 and capsys.readouterr().err.strip() == expected
        else:  # an Optuna search goes on in its sweep dir: each trial in a new directory
            OneRunPerDirectory().on_multirun_start(cfg)


@pytest.mark.slow
def test_a_sweep_into_a_finished_sweep_is_refused_before_hydra_writes_there(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    (sweep / "0_seed-1").mkdir(parents=True)
    (sweep / "0_seed-1" / "metrics.json").write_text(json.dumps({"status": "completed", "val/acc": 0.8}))
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    refused = start("train.py", "-m", "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert refused.returncode == 2, refused.stderr[-2000:]
    last_line = refused.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"{sweep} holds a finished sweep (1 finished job, 0_seed-1 first)")
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before  # no multirun.yaml either


@pytest.mark.slow  # git in subprocesses
def test_a_modified_trees_patch_applies_to_a_clean_clone(tmp_path: Path) -> None:
    repo, clone = tmp_path / "repo", tmp_path / "clone"
    (repo / "src").mkdir(parents=True)
    git("init", "-q", "-b", "main", cwd=repo)
    (repo / "model.py").write_text("lr = 0.001\nepochs = 5\n")
    (repo / "src" / "kept.py").write_text("")
    (repo / "notes.txt").write_text("kept\n")
    git("add", ".", cwd=repo)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first", cwd=repo)
    git("clone", "-q", str(repo), str(clone), cwd=tmp_path)
    (repo / "model.py").write_text("lr = 0.01\nepochs = 5\n")  # changed
    (repo / "notes.txt").unlink()  # deleted
    (repo / "new.py").write_text("print('new')")  # untracked, no newline at its end: in the patch
    (repo / "weights.bin").write_bytes(bytes(range(256)))  # untracked, binary: listed only
    (repo / "src" / "table.txt").write_bytes(b"a\r\nb\x0cc\n")  # git's lines end at "\n" alone

    code, patch = code_version(repo / "src")  # asked from inside the tree, as for the package's folder
    assert code == {
        "commit": git("rev-parse", "HEAD", cwd=repo).strip(),
        "branch": "main",
        "modified": True,
        "untracked": ["new.py", "src/table.txt", "weights.bin"],
    }
    (tmp_path / "code.patch").write_text(patch)
    git("apply", str(tmp_path / "code.patch"), cwd=clone)
    assert (clone / "model.py").read_text() == "lr = 0.01\nepochs = 5\n"
    assert (clone / "new.py").read_text() == "print('new')"
    assert (clone / "src" / "table.txt").read_bytes() == b"a\r\nb\x0cc\n"
    assert not (clone / "notes.txt").exists() and not (clone / "weights.bin").exists()


@pytest.mark.slow  # git in a subprocess
def test_outside_a_git_checkout_the_code_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT / "src", tmp_path / "src")  # the tree without .git, as an unpacked archive has it
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert code_version(tmp_path / "src") == ({"commit": "unknown"}, "")
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on this machine
    assert code_version(ROOT) == ({"commit": "unknown"}, "")


def test_a_metric_matches_within_the_tolerance_and_only_recorded_values_count() -> None:
    recorded = {"status": "completed", "val/acc": 0.9, "test/loss": float("nan"), "fit_time_s": 2.0}
    rerun = {"status": "completed", "val/acc": 0.9004, "test/loss": float("nan"), "fit_time_s": 3.0, "new": 1}
    assert differences(recorded, rerun) == ["val/acc: recorded 0.9, now 0.9004 (difference +0.0004)"]
    assert differences(recorded, rerun, tolerance=0.001) == []  # a GPU's rounding: docs/reproduce.md
    assert differences({**recorded, "status": "debug"}, rerun, 1.0) == [
        "status: recorded 'debug', now 'completed'"
    ]


def test_a_resume_in_its_own_directory_takes_the_runs_overrides_and_the_typed_ones_win(
    tmp_path: Path,
) -> None:
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- optimizer=adam\n- trainer.max_epochs=20\n- seed=3\n"
    )
    typed = ["trainer.max_epochs=30", "ckpt_path=auto", f"hydra.run.dir={tmp_path}"]
    assert with_run_overrides(typed) == ["optimizer=adam", "seed=3", *typed]
    sweep = [*typed[1:], "-m"]
    assert with_run_overrides(sweep) == sweep  # a sweep: its jobs have directories of their own
    assert with_run_overrides(typed[:1] + typed[2:]) == typed[:1] + typed[2:]  # not a resume


def test_only_a_finished_run_refuses_a_new_one(tmp_path: Path) -> None:
    assert refusal(tmp_path, None, "train") is None  # empty
    for status, refused in (("failed", False), ("interrupted", False), ("completed", True), ("debug", True)):
        (tmp_path / "metrics.json").write_text(json.dumps({"status": status}))
        assert (refusal(tmp_path, None, "train") is not None) == refused, status
    assert refusal(tmp_path, "auto", "train") is None  # continued
    assert refusal(tmp_path, str(tmp_path / "checkpoints" / "last.ckpt"), "train") is None
    assert refusal(tmp_path, "other/checkpoints/last.ckpt", "train") is not None
    assert refusal(tmp_path, "auto", "eval").endswith(
        "give this run a new directory (leave out hydra.run.dir)"
    )
