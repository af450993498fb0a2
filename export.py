"""Export a trained checkpoint as an ONNX model, verified with onnxruntime on the 10k test images.

python export.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt
python export.py ckpt_path=best.ckpt onnx_path=mnist_logreg.onnx
"""

import hydra
from omegaconf import DictConfig

from mnist_logreg.collector import imports_frozen
from mnist_logreg.errors import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    with imports_frozen():  # imported here so that `--help` does not load torch
        from mnist_logreg.onnx_export import export

    export(cfg)


if __name__ == "__main__":
    main()
