"""`${unique_dir:path}`: claim a new directory, so that two runs or sweeps never share one.

A timestamp alone is not enough: two sweeps started in the same second would write their job directories
`0/`, `1/`, ... into the same place and overwrite each other. `os.mkdir` is atomic, so of two processes
claiming the same name one gets it and the other takes the next free suffix (`_1`, `_2`, ...).

Registered with `use_cache=True` like Hydra's `${now:...}`: a config resolves it once, and Hydra copies the
resolved value into every job's config, in this process or in a launcher's workers. While composing, Hydra
also resolves copies of the config (and the default run directory of an entry point that sets its own), so
a claimed directory that is still empty when the process ends was never used and is removed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from pathlib import Path

from omegaconf import OmegaConf


def claim_unique_dir(path: str) -> str:
    """Create `path`, or `path_1`, `path_2`, ... if it exists; return the one created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) > 0:
        # A DDP rank started by torchrun, which cannot ask rank 0 what it claimed: it takes `path` itself,
        # which is rank 0's when rank 0 claims it first and no other run took that name in the same second.
        # For certainty, give torchrun runs an explicit `hydra.run.dir`.
        Path(path).mkdir(exist_ok=True)
        return path
    candidate, suffix = path, 0
    while True:
        try:
            os.mkdir(candidate)
            _claimed.append(candidate)
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = f"{path}_{suffix}"


_claimed: list[str] = []


@atexit.register
def _remove_unused_claims() -> None:
    for path in _claimed:
        with contextlib.suppress(OSError):  # not empty: the run or sweep wrote to it
            os.rmdir(path)
            os.rmdir(Path(path).parent)  # `logs/runs/` too, if nothing else is in it


# Hydra's plugin scan may execute this module more than once in a process.
if not OmegaConf.has_resolver("unique_dir"):
    OmegaConf.register_new_resolver("unique_dir", claim_unique_dir, use_cache=True)
