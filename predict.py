"""Label your own digit images with a trained checkpoint.

python predict.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt images=my_digits/
python predict.py ckpt_path=best.ckpt images=seven.jpg
python predict.py ckpt_path=best.ckpt 'images=scans/**/*.png'   # quote a glob
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from mnist_logreg.inference.predict import predict  # here, not at the top: `--help` needs no torch

    predict(cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "predict")  # a misspelt key: "did you mean ...?"
    main()
