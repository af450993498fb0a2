"""What a run is called: the options and overrides that make it differ from the defaults, in a short form
that leads its directory's name (`logs/runs/lr-0.01+optimizer-adam_<time>`), and so its name in TensorBoard's
run list and HParams table, in MLflow and in W&B.

Key and value are joined by `-`, overrides by `+`: a path with `=` or `,` in it would have to be quoted
whenever it is given back on the command line (`ckpt_path=...`), where Hydra reads `=` and `,` as syntax.

The overrides come from Hydra's `hydra.job.override_dirname`, less the keys that say where or how to run
rather than what is trained (`hydra.job.config.override_dirname.exclude_keys`, conf/hydra/default.yaml).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mnist_logreg.runtime import in_multirun

MAX_LENGTH = 80  # longer labels keep their first characters and end in a hash of the whole
NO_OVERRIDES = "defaults"
# One override of `override_dirname` ("key=value,key=value"): a comma followed by the next key.
_NEXT_KEY = re.compile(r",(?=[+~]?[\w./@-]+=)")


def run_label(override_dirname: str) -> str:
    """`optimizer.lr=0.0123456,optimizer=adam` -> `lr-0.01235+optimizer-adam`: the last part of each key
    (all of it where two keys would read the same), numbers to 4 significant digits, characters other than
    letters, digits and `._+-` as `_`, and at most `MAX_LENGTH` characters."""
    if not override_dirname:
        return NO_OVERRIDES
    items = [item.lstrip("+").partition("=") for item in _NEXT_KEY.split(override_dirname)]
    keys = short_keys([key for key, _, _ in items])
    label = "+".join(
        _safe(key) + "-" + _safe(short_number(value)) for key, (_, _, value) in zip(keys, items, strict=True)
    )
    return _shortened(label)


def search_label(keys: list[str]) -> str:
    """`optimizer.lr`, `data.batch_size` -> `lr+batch_size`: what a search searches, in the form of a run's
    label (`searched` when nothing is)."""
    return _shortened("+".join(_safe(key) for key in short_keys(keys))) if keys else "searched"


def short_keys(keys: list[str]) -> list[str]:
    """The last part of each key, all of it where two keys would read the same."""
    short = [re.split(r"[./]", key.lstrip("+~"))[-1] for key in keys]
    return [s if short.count(s) == 1 else key for s, key in zip(short, keys, strict=True)]


def _shortened(label: str) -> str:
    if len(label) <= MAX_LENGTH:
        return label
    digest = hashlib.sha1(label.encode()).hexdigest()[:8]
    return f"{label[: MAX_LENGTH - 9]}-{digest}"


def _safe(text: str) -> str:
    """Letters, digits and `._-` as they are (all that Hydra reads unquoted and a shell leaves alone)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def short_number(value: str) -> str:
    """`0.0001032326035197658` -> `0.0001032`: 4 significant digits; integers and text as they are."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if any(c in value for c in ".eE") and math.isfinite(number) else value


def register_resolvers() -> None:
    """`${run_label:${hydra.job.override_dirname}}` in conf/hydra/default.yaml, and `${prod:...}`, which
    conf/model/net/ sizes a network's first layer with (the pixels of a `C x H x W` image)."""
    OmegaConf.register_new_resolver("run_label", run_label, replace=True)
    OmegaConf.register_new_resolver("prod", product, replace=True)


def product(values: Sequence[int] | None) -> int | None:
    """The product of `values`; None while they are unknown (the data's shape, filled in by assembly)."""
    return None if values is None else math.prod(values)


def run_name() -> str:
    """The run's name in TensorBoard's HParams table, in MLflow and W&B: its directory's name, and for a job
    of a sweep `<sweep directory>/<job directory>`, so that the jobs of one sweep sort together."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    return f"{sweep_name()}/{output_dir.name}" if in_multirun() else output_dir.name


def sweep_name() -> str:
    return Path(HydraConfig.get().sweep.dir).name
