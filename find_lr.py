"""Find a learning rate: Lightning's range test on the model, data and optimizer that train.py would use.

python find_lr.py                                  # SGD, batch 100, as train.py
python find_lr.py optimizer=adam data.batch_size=1000
"""

import os
import sys

if not sys.stderr.isatty():
    # Lightning's range test draws a tqdm bar into any output; tqdm reads this when it is first imported.
    os.environ.setdefault("TQDM_DISABLE", "1")

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="find_lr")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from mnist_logreg.runs.lr_finder import find_lr  # here, not at the top: `--help` needs no torch

    find_lr(cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "find_lr")  # a misspelt key: "did you mean ...?"
    main()
