"""Bad config values are refused before anything trains, in one line naming the key, value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from helpers import run_script
from mnist_logreg.errors import UserError
from mnist_logreg.runs.training import train

REFUSED = [
    (["optimizer.lr=-0.1"], r"^optimizer\.lr=-0\.1 is invalid: it must be a positive number"),
    (["optimizer.lr=abc"], r"^optimizer\.lr='abc' is invalid: it must be a positive number"),
    (["optimizer.lr=inf"], r"^optimizer\.lr=inf is invalid"),
    (["data.batch_size=0"], r"^data\.batch_size=0 is invalid: it must be a whole number >= 1"),
    (["data.batch_size=2.5"], r"^data\.batch_size=2\.5 is invalid: .*a whole number"),
    (["data.val_size=600"], r"^data\.val_size=600 leaves no training data: it must be below the 600"),
    (["seed=-1"], r"^seed=-1 is invalid: it must be a whole number from 0"),
    (
        ["+optimizer.momentun=0.9"],
        r"^optimizer\.momentun=0\.9 is not an option of torch\.optim\.SGD: did you mean optimizer\.momentum",
    ),
    (
        ["+trainer.max_epoch=3"],
        r"^trainer\.max_epoch=3 is not an option of lightning\.pytorch\.Trainer: did you mean trainer\.max_",
    ),
    (["optimizer.momentum=-1"], r"^optimizer: Invalid momentum value: -1 \(refused by torch\.optim\.SGD\)"),
    (
        ["optimizer=adam", "+optimizer.betas=[0.9,2.0]"],
        r"^optimizer: Invalid beta parameter .*torch\.optim\.Adam",
    ),
    # The trainer is built after the data is read (the model is built for it): tiny_mnist's 600 images.
    (["trainer.accelerator=abacus", "data.val_size=100"], r"^trainer: .*accelerator='abacus'.*Available"),
    (
        ["model._target_=mnist_logreg.core.model.Logistic"],
        r"^model\._target_=mnist_logreg\.core\.model\.Logistic cannot be",
    ),
    # Wrong types, judged by the target's own annotations.
    (
        ["trainer.max_epochs=five"],
        r"^trainer\.max_epochs='five' is invalid: lightning\.pytorch\.Trainer takes a whole number or null",
    ),
    (
        ["+trainer.max_steps=abc"],
        r"^trainer\.max_steps='abc' is invalid: .*Trainer takes a whole number there",
    ),
    (
        ["+trainer.gradient_clip_val=big"],
        r"^trainer\.gradient_clip_val='big' is invalid: .* a number or null",
    ),
    (["trainer.precision=33"], r"^trainer\.precision=33 is invalid: .*takes one of 64, 32, 16, .*bf16-mixed"),
    (
        ["model.scheduler_interval=batch"],
        r"^model\.scheduler_interval='batch' is invalid: .*one of step, epoch",
    ),
    (["trainer.devices=abc", "data.val_size=100"], r"^trainer: `devices` selected with `CPUAccelerator`"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), REFUSED, ids=[" ".join(o) for o, _ in REFUSED])
def test_bad_values_are_refused_before_training(
    compose_train, tiny_mnist: Path, tmp_path: Path, overrides: list[str], message: str
) -> None:
    cfg = compose_train(f"paths.data_dir={tiny_mnist}", "callbacks.progress_bar.refresh_rate=0", *overrides)
    with pytest.raises(UserError, match=message) as refused:
        train(cfg)
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # no step was trained


@pytest.mark.slow
def test_good_values_pass_the_checks(compose_train, tiny_mnist: Path) -> None:
    cfg = compose_train(
        f"paths.data_dir={tiny_mnist}",
        "optimizer=adam",
        "optimizer.lr=0.01",
        "data.val_size=100",
        "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
    )
    assert train(cfg)["status"] == "completed"


def test_a_mistyped_existing_key_is_hydras_error(compose_train) -> None:
    with pytest.raises(ConfigCompositionException, match=r"optimizer\.lrr"):
        compose_train("optimizer.lrr=0.1")


def test_an_option_the_group_lacks_is_hydras_error_with_the_options(compose_train) -> None:
    with pytest.raises(MissingConfigException, match=r"(?s)optimizer/adamw.*\tadam\n\tsgd"):
        compose_train("optimizer=adamw")


@pytest.mark.slow
def test_command_line_shows_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_script("train.py", "+optimizer.momentun=0.9", f"hydra.run.dir={tmp_path / 'run'}")
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert "Traceback" not in output
    assert (
        output.strip()
        .splitlines()[-1]
        .endswith(
            "optimizer.momentun=0.9 is not an option of torch.optim.SGD: did you mean optimizer.momentum?"
        )
    )
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_gpu_run_without_a_gpu_names_the_fix(compose_train, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # as on a machine without a GPU
    for overrides in (["trainer=gpu"], ["trainer.accelerator=gpu"]):
        with pytest.raises(UserError, match=r"^trainer\.accelerator=gpu but torch finds no GPU.*=auto"):
            train(compose_train(*overrides))
