"""Another network from a config file (`model/net=mlp`): it trains, is tested, evaluated, exported and
loaded like the linear one, and the parts that explain a linear model's weights say they need one."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime
import pytest
import torch

from helpers import compose_config
from mnist_logreg.core.data import MNISTDataModule
from mnist_logreg.core.model import LogisticRegression, build_net
from mnist_logreg.inference.export import export
from mnist_logreg.runs.evaluation import evaluate

QUIET = "callbacks.progress_bar.refresh_rate=0"


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`model/net=mlp` with Adam, 200 steps of one epoch on the real MNIST."""
    from mnist_logreg.runs.training import train

    output_dir = tmp_path_factory.mktemp("mlp") / "run"
    overrides = [
        "model/net=mlp",
        "optimizer=adam",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=200",
    ]
    train(compose_config([*overrides, "trainer.accelerator=cpu", QUIET], output_dir))
    return output_dir


@pytest.mark.slow
def test_an_mlp_trains_evaluates_and_exports_like_the_linear_model(mlp_run: Path, tmp_path: Path) -> None:
    trained = json.loads((mlp_run / "metrics.json").read_text())
    assert 0.9 < trained["test/acc"] < 1.0
    best = mlp_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)  # plain values only, the network's spec among them
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "torch.nn.Sequential"
    assert set(checkpoint["state_dict"]) == {"net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"}

    evaluated = evaluate(compose_config([f"ckpt_path={best}", QUIET], tmp_path / "eval", "eval"))
    assert evaluated["test/acc"] == trained["test/acc"]
    figures = {p.name for p in (tmp_path / "eval" / "figures").iterdir()}
    assert figures == {"confusion_matrix.png", "confident_mistakes.png"}  # no weight templates: not linear

    datamodule = MNISTDataModule()
    datamodule.setup("test")
    images, labels = datamodule.splits["test"]
    model = LogisticRegression.load_from_checkpoint(best, map_location="cpu").eval()
    with torch.no_grad():
        assert int((model(images).argmax(1) == labels).sum()) == round(trained["test/acc"] * 10_000)

    path = export(compose_config([f"ckpt_path={best}"], tmp_path / "export", "export"))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"pixels": images.reshape(-1, 1, 28, 28).numpy()})
    assert int((logits.argmax(1) == labels.numpy()).sum()) == round(trained["test/acc"] * 10_000)


@pytest.mark.slow
def test_the_demo_refuses_a_network_it_cannot_explain(mlp_run: Path) -> None:
    from mnist_logreg.core.checkpoints import load_model
    from mnist_logreg.inference.demo import DemoError, linear_model

    best = mlp_run / "checkpoints" / "best.ckpt"
    with pytest.raises(DemoError, match=r"holds a Sequential network: the demo explains a linear model"):
        linear_model(load_model(best), best)


def test_a_checkpoints_network_spec_may_build_modules_only() -> None:
    assert isinstance(
        build_net({"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2}), torch.nn.Linear
    )
    with pytest.raises(TypeError, match=r"os\.system is not a torch\.nn\.Module"):
        build_net(
            {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "os.system", "_args_": ["true"]}]}
        )


def test_the_demo_refuses_a_model_of_other_images() -> None:
    from mnist_logreg.inference.demo import DemoError, linear_model

    model = LogisticRegression(input_shape=[3, 32, 32], num_classes=3)
    with pytest.raises(DemoError, match=r"^best\.ckpt reads 3 x 32 x 32 images: the demo explains 1 x 28"):
        linear_model(model, Path("best.ckpt"))
