"""Where `python train.py` spends its time before the first training step, measured in one process.

Imports one library at a time (each figure excludes what earlier lines already loaded), then composes the
config, reads MNIST into memory and builds the Trainer, as `mnist_logreg.runs.training.train` does; prints one
JSON line of seconds.

    python benchmarks/startup.py
"""

import time

started = time.perf_counter()

import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
IMPORTS = {
    "torch": "torch",
    "torchvision": "torchvision.datasets",
    "lightning": "lightning",
    "hydra": "hydra.utils",
    "mnist_logreg": "mnist_logreg.runs.training",
    "tensorboard": "torch.utils.tensorboard",  # what the TensorBoard logger loads when it starts
}


def clock(times: dict[str, float], name: str, since: float) -> float:
    now = time.perf_counter()
    times[name] = round(now - since, 3)
    return now


def main() -> None:
    times: dict[str, float] = {}
    mark = time.perf_counter()
    for name, module in IMPORTS.items():
        importlib.import_module(module)
        mark = clock(times, f"import {name}", mark)

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from mnist_logreg.runs.console import quiet_libraries

    quiet_libraries()

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = tempfile.mkdtemp(prefix="startup-")
        cfg.hydra.runtime.cwd = str(ROOT)
    HydraConfig.instance().set_config(cfg)
    mark = clock(times, "compose config", mark)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # checks the MD5 sums of the four files
    datamodule.setup()  # reads them into memory and splits off validation
    mark = clock(times, "data: check, read, split", mark)

    instantiate(
        cfg.trainer,
        callbacks=[instantiate(c) for c in cfg.callbacks.values()],
        logger=[instantiate(lg) for lg in cfg.logger.values()],
    )
    mark = clock(times, "build Trainer", mark)
    times["total"] = round(mark - started, 3)
    print(json.dumps(times))


if __name__ == "__main__":
    main()
