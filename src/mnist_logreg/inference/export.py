"""A checkpoint as an ONNX model, checked against PyTorch on the whole test set before it is kept.

The model takes float32 pixels in [0, 1] shaped N x C x H x W (any N; C x H x W is the checkpoint's
`input_shape`, 1 x 28 x 28 for MNIST) and returns logits, exactly what the LightningModule does: it trains
on unnormalised pixels, so the graph needs no normalisation step. The module's input transform
(`model.deskew=true`) is part of its forward pass, so it is in the graph, in front of the network: an ONNX
user feeds the same pixels and gets the same accuracy. The file's metadata
(`metadata_props`) holds the class names (`class_names`, a JSON list, index -> name) and the `input_shape`.
"""

from __future__ import annotations

import importlib
import json
import logging
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from omegaconf import DictConfig

from mnist_logreg.core.checkpoints import load_model
from mnist_logreg.core.data_contract import check_test_data, test_data
from mnist_logreg.core.model import LogisticRegression
from mnist_logreg.errors import UserError, require_extra
from mnist_logreg.files import replaced_atomically
from mnist_logreg.runs.config import build

log = logging.getLogger(__name__)

INPUT, OUTPUT = "pixels", "logits"


class ExportError(UserError):
    """The ONNX model does not reproduce PyTorch's results, or its tools are not installed."""


def export_onnx(model: LogisticRegression, path: Path) -> None:
    """Write `model` as ONNX with a dynamic batch dimension, in one file, its class names and input shape in
    the file's metadata.

    Uses torch's current exporter (`dynamo=True`, which needs onnxscript): the TorchScript-based one
    still works in torch 2.14 but is deprecated and warns that it will be removed. Its default opset has
    ONNX's GridSample, which the deskewing transform samples with.
    """
    for module in ("onnx", "onnxscript"):
        require(module)
    # The exporter's optimisation passes log each step at INFO; what matters is the check that follows.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    sample = torch.zeros(2, *model.input_shape)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        # torch.export's note on the model's unused submodules (metrics, loss) says nothing to act on.
        warnings.simplefilter("ignore", UserWarning)
        torch.onnx.export(
            model.eval(),
            (sample,),
            path,
            dynamo=True,
            external_data=False,  # the weights inside the .onnx file, not in a second file next to it
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    onnx = require("onnx")
    graph = onnx.load(str(path))
    metadata = {
        "class_names": json.dumps(model.class_names),  # index -> name
        "input_shape": json.dumps(list(model.input_shape)),  # C, H, W
    }
    onnx.helper.set_model_props(graph, metadata)
    onnx.save(graph, str(path))


def compare_with_torch(
    model: LogisticRegression, path: Path, images: torch.Tensor
) -> tuple[int, float, np.ndarray]:
    """onnxruntime's logits against PyTorch's on `images`: differing predictions, max |difference|, logits."""
    onnxruntime = require("onnxruntime")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if images.dtype == torch.uint8:
        images = images.float().div(255.0)
    pixels = images.reshape(-1, *model.input_shape).float().numpy()
    (onnx_logits,) = session.run([OUTPUT], {INPUT: pixels})
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(pixels)).numpy()
    differing = int((onnx_logits.argmax(1) != torch_logits.argmax(1)).sum())
    return differing, float(np.abs(onnx_logits - torch_logits).max()), onnx_logits


def export(cfg: DictConfig) -> Path:
    """Export, verify on the data's test split (MNIST's official test set by default), and only then move
    the file to its final name."""
    classifier = load_model(cfg.get("ckpt_path"))
    # The graph applies the input transform itself: it is checked on the test images as read.
    datamodule = build("data", cfg.data)
    check_test_data(datamodule, classifier.input_shape, classifier.class_names, f"ckpt_path={cfg.ckpt_path}")
    images, labels = test_data(datamodule)

    path = Path(cfg.onnx_path)
    with replaced_atomically(path) as tmp:
        export_onnx(classifier, tmp)
        differing, max_diff, logits = compare_with_torch(classifier, tmp, images)
        if differing or not max_diff <= cfg.atol:  # `not <=`: a NaN logit fails too
            raise ExportError(
                f"the ONNX model disagrees with PyTorch on the {len(labels)} test images ({differing} "
                f"predictions differ, max logit difference {max_diff:.2e} > atol={cfg.atol}); nothing written"
            )
    accuracy = float((torch.from_numpy(logits).argmax(1) == labels).float().mean())
    log.info(
        "Wrote %s: on the %d test images onnxruntime gives PyTorch's predictions (max logit difference "
        "%.1e), test accuracy %.4f",
        path,
        len(labels),
        max_diff,
        accuracy,
    )
    return path


def require(module: str) -> ModuleType:
    """Import an export-only dependency, or say how to install it."""
    require_extra("export", module, needed_by="export")
    return importlib.import_module(module)
