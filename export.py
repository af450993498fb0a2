"""Export a trained checkpoint as an ONNX model, verified with onnxruntime on the 10k test images.

python export.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt
python export.py ckpt_path=best.ckpt onnx_path=mnist_logreg.onnx
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.errors import require_extra
from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@report_user_errors
def main(cfg: DictConfig) -> None:
    require_extra("export", "onnx", "onnxscript", "onnxruntime")  # said at once, not after torch's import
    from mnist_logreg.inference.export import export  # here, not at the top: `--help` needs no torch

    export(cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "export")  # a misspelt key: "did you mean ...?"
    main()
