"""Lightning's own training features work on this project's model: schedulers, accumulation, clipping, early
stopping and the learning-rate finder. Each test fails if the feature is silently off."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import pytest
import torch

from mnist_logreg.runs.lr_finder import find_lr
from mnist_logreg.runs.training import train

# 500 training images (600 less 100 for validation): batch 100 is 5 steps an epoch.
TINY = ("data.val_size=100", "trainer.accelerator=cpu", "callbacks.progress_bar=null", "~callbacks.figures")


@pytest.fixture
def run_tiny(compose_train, tiny_mnist: Path, tmp_path: Path):
    def _run(name: str, *overrides: str) -> dict[str, Any]:
        cfg = compose_train(
            f"paths.data_dir={tiny_mnist}", f"paths.output_dir={tmp_path / name}", *TINY, *overrides
        )
        return train(cfg)

    return _run


def logged(run: Path, column: str) -> list[tuple[int, float]]:
    with open(run / "csv" / "version_0" / "metrics.csv") as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]


def weights(run: Path) -> torch.Tensor:
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    return torch.cat([state["net.weight"].flatten(), state["net.bias"]])


@pytest.mark.slow
def test_onecycle_steps_every_batch_and_is_logged(run_tiny, tmp_path: Path) -> None:
    run_tiny(
        "onecycle",
        "scheduler=onecycle",
        "optimizer.lr=0.5",
        "optimizer.momentum=0.9",
        "trainer.max_epochs=4",
        "trainer.log_every_n_steps=1",
        "logger=csv",
    )
    lrs = logged(tmp_path / "onecycle", "lr-SGD")
    values = [lr for _, lr in lrs]
    assert len(lrs) == 20 and len(set(values)) == 20  # a new rate at each of the 20 steps
    peak = max(values)
    assert peak == pytest.approx(0.5, rel=0.05) and values.index(peak) in range(4, 8)  # 30% warm-up
    assert values[0] < peak / 10 and values[-1] < peak / 1000


@pytest.mark.slow
def test_cosine_steps_once_an_epoch(run_tiny, tmp_path: Path) -> None:
    run_tiny("cosine", "scheduler=cosine", "optimizer.lr=0.1", "trainer.max_epochs=4", "logger=csv")
    values = [lr for _, lr in logged(tmp_path / "cosine", "lr-SGD")]
    expected = [0.05 * (1 + torch.cos(torch.tensor(torch.pi * e / 4)).item()) for e in range(4)]
    assert values == pytest.approx(expected)


@pytest.mark.slow
def test_the_learning_rate_is_logged_without_a_scheduler_too(run_tiny, tmp_path: Path) -> None:
    run_tiny("constant", "optimizer.lr=0.1", "trainer.max_epochs=2", "logger=csv")
    assert {lr for _, lr in logged(tmp_path / "constant", "lr-SGD")} == {0.1}


@pytest.mark.slow
def test_accumulating_4_batches_of_25_equals_batches_of_100(run_tiny, tmp_path: Path) -> None:
    run_tiny("b100", "data.batch_size=100", "optimizer.lr=0.5", "trainer.max_epochs=2")
    run_tiny(
        "b25x4",
        "data.batch_size=25",
        "+trainer.accumulate_grad_batches=4",
        "optimizer.lr=0.5",
        "trainer.max_epochs=2",
    )
    run_tiny("b25", "data.batch_size=25", "optimizer.lr=0.5", "trainer.max_epochs=2")
    b100, b25x4, b25 = (weights(tmp_path / name) for name in ("b100", "b25x4", "b25"))
    assert torch.allclose(b25x4, b100, atol=1e-6)
    assert not torch.allclose(b25, b100, atol=1e-3)  # the comparison can tell the difference


class GradientNorms(L.Callback):
    """The gradient norm each optimizer step applied: read in the optimizer's own post-step hook, after
    Lightning has clipped the gradients."""

    norms: ClassVar[list[float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        GradientNorms.norms = []

        def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
            GradientNorms.norms.append(
                torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
            )

        trainer.optimizers[0].register_step_post_hook(record)


@pytest.mark.slow
def test_gradient_clipping_bounds_the_norm(run_tiny) -> None:
    norms = "+callbacks.norms._target_=test_lightning_features.GradientNorms"
    run_tiny("unclipped", norms, "optimizer.lr=0.5")
    unclipped = GradientNorms.norms
    run_tiny("clipped", norms, "optimizer.lr=0.5", "+trainer.gradient_clip_val=0.05")
    clipped = GradientNorms.norms
    assert len(clipped) == len(unclipped) == 25
    assert max(unclipped) > 0.2  # so the limit below is binding
    assert max(clipped) <= 0.05 * (1 + 1e-4)


@pytest.mark.slow
def test_early_stopping_ends_the_fit_and_records_the_epoch(run_tiny) -> None:
    # min_delta 1: no epoch can improve val/acc enough, so patience 1 runs out at the second validation.
    metrics = run_tiny(
        "early",
        "callbacks=early_stopping",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1.0",
        "trainer.max_epochs=5",
    )
    assert metrics["early_stopped_epoch"] == 1 and metrics["epochs"] == 2 and metrics["steps"] == 10
    assert "early_stopped_epoch" not in run_tiny("full", "trainer.max_epochs=2")


@pytest.mark.slow
def test_lr_find_sweeps_the_rates_and_suggests_one_among_them(
    compose_train, tiny_mnist: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        f"paths.data_dir={tiny_mnist}",
        *TINY,
        "lr_find.num_training=40",
        "trainer.max_epochs=10",  # 5 steps an epoch: the test stops at max_epochs too
        "lr_find.early_stop_threshold=null",
        config_name="find_lr",
    )
    result = find_lr(cfg)
    lrs = result["lr"]
    assert len(lrs) == 40 and len(set(lrs)) == 40 and lrs == sorted(lrs)
    assert lrs[0] == pytest.approx(1e-4, rel=0.2) and lrs[-1] == pytest.approx(10, rel=0.2)
    assert lrs[0] < result["suggestion"] < lrs[-1] and result["suggestion"] in lrs
    assert result["command"].endswith(f"optimizer.lr={result['suggestion']:.3g}")
    run = tmp_path / "run"
    assert (run / "figures" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run / "lr_find.json").read_text())["suggestion"] == result["suggestion"]


@pytest.mark.slow
def test_the_onecycle_experiment_reaches_92_5_percent(compose_train) -> None:
    metrics = train(
        compose_train("experiment=onecycle", "trainer.accelerator=cpu", "callbacks.progress_bar=null")
    )
    assert metrics["test/acc"] >= 0.925 and metrics["steps"] == 5 * 550
