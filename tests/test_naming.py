"""A run's name: what differs from the defaults, short, and safe to give back on the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser

from helpers import CONF_DIR, run_script
from mnist_logreg.naming import MAX_LENGTH, run_label, search_label


def test_a_label_says_what_was_overridden_in_short() -> None:
    assert run_label("") == "defaults"
    assert run_label("optimizer.lr=0.01,optimizer=adam") == "lr-0.01+optimizer-adam"
    assert run_label("+trainer.limit_train_batches=20,model/net=mlp") == "limit_train_batches-20+net-mlp"
    assert run_label("optimizer.lr=0.0123456789") == "lr-0.01235"  # 4 significant digits
    assert run_label("a.lr=1,b.lr=2") == "a.lr-1+b.lr-2"  # the whole key where the last parts are alike
    assert run_label("data.batch_size=100,data.val_size=100") == "batch_size-100+val_size-100"


def test_a_search_is_labelled_by_what_it_searches() -> None:
    assert search_label(["optimizer.lr", "data.batch_size"]) == "lr+batch_size"
    assert search_label(["optimizer.lr", "scheduler.lr"]) == "optimizer.lr+scheduler.lr"  # both, in full
    assert search_label([]) == "searched"


def test_a_long_label_is_cut_predictably() -> None:
    overrides = ",".join(f"optimizer.p{i}=0.{i:04d}" for i in range(20))
    label = run_label(overrides)
    assert len(label) == MAX_LENGTH and label == run_label(overrides)
    assert label.startswith("p0-0+p1-0.0001+") and label != run_label(overrides.replace("p19", "q19"))


def test_a_run_directory_is_named_by_its_overrides_and_given_back_without_quoting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(HydraConfig.instance(), "cfg", HydraConfig.instance().cfg)  # restored afterwards
    overrides = ["optimizer=adam", "optimizer.lr=0.01", "trainer.accelerator=cpu", "ckpt_path=auto"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent == Path("logs/runs")
    assert run_dir.name.startswith("lr-0.01+optimizer-adam_2")  # where and how to run are left out
    # The directory, given back as a value (ckpt_path=<run>/checkpoints/last.ckpt), needs no quotes.
    (parsed,) = OverridesParser.create().parse_overrides([f"ckpt_path={run_dir}/checkpoints/last.ckpt"])
    assert parsed.value() == f"{run_dir}/checkpoints/last.ckpt" and not parsed.is_sweep_override()


@pytest.mark.slow
def test_two_runs_are_told_apart_in_tensorboards_run_list(tmp_path: Path) -> None:
    """`tensorboard --logdir logs`: one run per training, named by its override within 24 characters."""
    logs = tmp_path / "logs"
    for override in ("optimizer=adam", "optimizer.lr=0.01"):
        result = run_script(
            "train.py",
            override,
            "debug=limit",
            "trainer.accelerator=cpu",
            # conf/hydra/default.yaml's run directory, under tmp_path (quoted: it holds interpolations)
            f"hydra.run.dir='{logs}/runs/${{run_label:${{hydra.job.override_dirname}}}}_${{now:%H-%M-%S_%f}}'",
        )
        assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted({str(p.parent.relative_to(logs)) for p in logs.rglob("events.out.tfevents.*")})
    assert len(runs) == 2 and all(run.endswith("/tensorboard") for run in runs)
    assert runs[0].startswith("runs/debug-limit+lr-0.01_") and runs[1].startswith(
        "runs/debug-limit+optimizer-adam_"
    )
    assert runs[0][:24] != runs[1][:24]  # what TensorBoard's HParams table shows of a trial's name
