"""Draw a digit in the browser and see what the model sees and why it answers (needs the demo extra).

python demo.py                                                 # the best checkpoint of the latest run
python demo.py ckpt_path=logs/runs/<run>/checkpoints/best.ckpt
python demo.py server_port=8000
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from mnist_logreg.errors import require_extra
from mnist_logreg.runs.job import report_user_errors
from mnist_logreg.runs.overrides import check_overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="demo")
@report_user_errors
def main(cfg: DictConfig) -> None:
    require_extra("demo", "gradio")  # said at once, not after torch's import
    from mnist_logreg.inference.demo import serve  # imported here so that `--help` does not load torch

    serve(cfg)


if __name__ == "__main__":
    check_overrides(Path(__file__).parent / "conf", "demo")  # a misspelt key: "did you mean ...?"
    main()
