"""Run a recorded run again in a new directory and compare every number it recorded.

python reproduce.py run=logs/runs/lr-0.01_2026-12-03_14-58-37_036389   # exit 0: "reproduced exactly"
python reproduce.py run=logs/sweeps/<sweep>/<job>        # a sweep job, a search trial, an eval.py run
python reproduce.py run=logs/runs/lr-0.01_2026-12-03_14-58-37_036389 tolerance=0.001   # a GPU run
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="reproduce")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from mnist_logreg.runs.reproduction import reproduce  # here, not at the top: `--help` needs no torch

    if not reproduce(cfg, Path(__file__).parent):
        sys.exit(1)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "reproduce")  # a misspelt key: "did you mean ...?"
    main()
