"""Export a trained checkpoint as an ONNX model, verified with onnxruntime on the 10k test images.

python export.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt
python export.py ckpt_path=best.ckpt onnx_path=mnist_logreg.onnx
"""

import hydra
from omegaconf import DictConfig

from mnist_logreg.errors import report_user_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from mnist_logreg.onnx_export import export  # here, not at the top: `--help` needs no torch

    export(cfg)


if __name__ == "__main__":
    main()
