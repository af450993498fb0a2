"""The GPU path, where there is one: `trainer=gpu` (mixed precision too) scores as a CPU does.

Marked `gpu`: skipped, with the reason, on a machine without one (conftest.py).
"""

from __future__ import annotations

import pytest
import torch

from mnist_logreg.runs.training import train

QUICK = ("trainer.max_epochs=1", "optimizer.lr=0.1", "callbacks.progress_bar=null")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_one_epoch_on_a_gpu_scores_as_on_a_cpu(compose_train, precision: str) -> None:
    cpu = train(compose_train("trainer.accelerator=cpu", *QUICK))
    gpu = train(compose_train("trainer=gpu", f"trainer.precision={precision}", *QUICK))
    assert torch.cuda.is_available()
    assert 0.85 < gpu["test/acc"] < 0.95
    assert gpu["test/acc"] == pytest.approx(cpu["test/acc"], abs=0.01)  # other kernels, other rounding
