"""A command refused before it does any work: one line naming the fix, and no run directory left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from helpers import CONF_DIR, ROOT, job_dir, run_script
from mnist_logreg.runs.job import remove_unused_run_dir
from mnist_logreg.runs.overrides import misspelling

# A run with the extra's modules hidden, as in an environment without the extra: `find_spec` answers None for
# a module that `sys.modules` maps to None. Prints whether the refusal came before the heavy imports.
WITHOUT = """
import runpy, sys
script, hidden, args = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
sys.modules.update(dict.fromkeys(hidden))
sys.argv = [script, *args]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    heavy = ("mnist_logreg.inference.export", "mnist_logreg.inference.demo")
    print("imported:", [m for m in heavy if m in sys.modules])
"""


@pytest.mark.parametrize(
    ("script", "hidden", "extra"),
    [("export.py", "onnx,onnxscript,onnxruntime", "export"), ("demo.py", "gradio", "demo")],
)
@pytest.mark.slow
def test_a_missing_extra_is_named_at_once_and_leaves_no_directory(
    tmp_path: Path, script: str, hidden: str, extra: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT, str(ROOT / script), hidden, "ckpt_path=best.ckpt"],
        cwd=tmp_path,  # the launch directory: the run directory would be logs/<command>/<time> in it
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    refusal, imported = result.stdout.strip().splitlines()
    assert refusal.endswith(f'not installed: pip install -e ".[{extra}]"'), refusal
    assert imported == "imported: []"  # refused before the command's own module is loaded
    assert list(tmp_path.iterdir()) == []  # no logs/, no logs/export/<time>/


@pytest.mark.slow
def test_a_refused_run_leaves_no_directory_and_a_refused_sweep_job_its_record(tmp_path: Path) -> None:
    run = run_script("train.py", "ckpt_path=nope.ckpt", f"hydra.run.dir={tmp_path / 'run'}")
    assert run.returncode == 2 and "ckpt_path=nope.ckpt does not exist" in run.stdout, run.stderr[-2000:]
    assert not (tmp_path / "run").exists()

    sweep = run_script("train.py", "-m", "ckpt_path=nope.ckpt", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert sweep.returncode != 0
    record = json.loads((job_dir(tmp_path / "sweep", 0) / "metrics.json").read_text())
    assert record["status"] == "failed" and "ckpt_path=nope.ckpt does not exist" in record["error"]


def test_only_a_directory_with_nothing_but_hydras_files_is_removed(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "runs" / "2026-01-01_00-00-00_000000"
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run)
        cfg.hydra.runtime.cwd = str(tmp_path)  # the launch directory
    HydraConfig.instance().set_config(cfg)
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("{}\n")
    log_file = Path(OmegaConf.select(HydraConfig.get().job_logging, "handlers.file.filename"))
    log_file.write_text("[ERROR] - refused\n")
    (run / "predictions.csv").write_text("path,label\n")  # work done before the refusal

    remove_unused_run_dir()
    assert (
        (run / "predictions.csv").exists() and (run / ".hydra" / "config.yaml").exists() and log_file.exists()
    )

    (run / "predictions.csv").unlink()
    remove_unused_run_dir()
    assert list(tmp_path.iterdir()) == []  # logs/runs/<run>, then the parents it leaves empty


def one_line_refusal(*overrides: str) -> str:
    result = run_script("train.py", *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    return line


@pytest.mark.slow
def test_a_misspelt_key_or_group_gets_the_right_spelling_in_one_line() -> None:
    assert one_line_refusal("optimizer.lrr=0.1") == (
        "optimizer.lrr is not a key of the config: did you mean optimizer.lr=0.1?"
    )
    assert one_line_refusal("-m", "optimiser=adam,sgd") == (
        "optimiser is not a key or group of the config: did you mean optimizer=adam,sgd?"
    )


@pytest.mark.slow
def test_a_new_key_still_gets_hydras_advice() -> None:
    result = run_script("train.py", "patience=3")
    assert result.returncode == 1 and "To append to your config use +patience=3" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "suggested"),
    [
        (["logger=mlflow", "logger.mlflow.run_nam=x"], "did you mean logger.mlflow.run_name=x?"),
        (["optimizr.lr=0.1"], "did you mean optimizer.lr=0.1?"),
        (["experimnt=tuned"], "did you mean experiment=tuned?"),  # a group chosen as null by default
        (["trainer.max_epoch=3"], "did you mean trainer.max_epochs=3?"),
        (
            ["optimizer.lr=interval(0.001,0.1)", "optimizer.momentun=0.9"],
            "did you mean optimizer.momentum=0.9?",
        ),
        (["optimizer=adam", "optimizer.lr=0.01"], None),
        (["+trainer.max_epoch=3"], None),  # added on purpose: config.py's check names the option
        (["patience=3"], None),
        (["data.deskew=true"], "use model.deskew=true"),  # moved: the model holds its input transform
    ],
)
def test_misspelling(overrides: list[str], suggested: str | None) -> None:
    message = misspelling(CONF_DIR, "train", overrides)
    assert (message if suggested is None else message.split(": ", 1)[1]) == suggested
