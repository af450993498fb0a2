"""Train multinomial logistic regression on MNIST.

python train.py                                   # the tutorial's settings: about 82% test accuracy
python train.py optimizer.lr=0.01 trainer.max_epochs=5
python train.py -m optimizer.lr=0.001,0.01,0.1    # a sweep
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides, with_run_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    """Returns the metric a sweeper optimises (`optimized_metric`, validation accuracy by default)."""
    from mnist_logreg.runs.run_lock import run_directory_lock
    from mnist_logreg.runs.training import train  # here, not at the top: `--help` needs no torch

    with run_directory_lock(cfg.paths.output_dir):  # one writer per run directory
        return train(cfg).get(cfg.optimized_metric)


if __name__ == "__main__":
    # `hydra.run.dir=<run> ckpt_path=auto`: the run's own overrides first (Hydra reads them from sys.argv).
    sys.argv[1:] = with_run_overrides(sys.argv[1:])
    check_overrides(Path(__file__).parent / "conf", "train")  # a misspelt key: "did you mean ...?"
    try:
        main()
    except KeyboardInterrupt:  # outside training, with nothing to save (in training: callbacks/stopping.py)
        sys.exit(130)
