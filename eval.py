"""Test a trained checkpoint on the official 10k MNIST test images.

python eval.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt
python eval.py ckpt_path=best.ckpt paths.data_dir=/data   # a checkpoint from another machine
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from mnist_logreg.runs.evaluation import evaluate  # here, not at the top: `--help` needs no torch

    evaluate(cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "eval")  # a misspelt key: "did you mean ...?"
    main()
