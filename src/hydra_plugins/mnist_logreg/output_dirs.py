"""`${unique_dir:path}`: claim a new directory, so that two runs or sweeps never share one.

A timestamp alone is not enough: two sweeps started in the same second would write their job directories
`0/`, `1/`, ... into the same place and overwrite each other. `os.mkdir` is atomic, so of two processes
claiming the same name one gets it and the other takes the next free suffix (`_1`, `_2`, ...).

Registered with `use_cache=True` like Hydra's `${now:...}`: a config resolves it once, and Hydra copies the
resolved value into every job's config, in this process or in a launcher's workers.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


def claim_unique_dir(path: str) -> str:
    """Create `path`, or `path_1`, `path_2`, ... if it exists; return the one created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = path, 0
    while True:
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = f"{path}_{suffix}"


# Hydra's plugin scan may execute this module more than once in a process.
if not OmegaConf.has_resolver("unique_dir"):
    OmegaConf.register_new_resolver("unique_dir", claim_unique_dir, use_cache=True)
