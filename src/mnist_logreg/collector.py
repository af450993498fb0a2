"""Keep Python's cyclic garbage collector off the objects that the libraries create when imported.

Importing torch, torchvision, Lightning and Hydra leaves about 680,000 objects (modules, functions, classes)
that live as long as the process, and the collector scans all of them at every full collection: six during
the imports and one during the training run, 0.58 s and 0.20 s on 2 cores (`python benchmarks/gc_cost.py`).
`gc.freeze()` moves what is alive into a generation that the collector never scans; reference counting still
frees whatever is released. The price: cycles that were already unreachable at the freeze are never
collected, about 14,000 objects once per process (the imports' leftovers; in a sweep, the first job's config).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen = False


@contextmanager
def imports_frozen() -> Iterator[None]:
    """Collect nothing while the block imports the libraries, then freeze what they left alive.

    Only the first time in a process: later, as in a sweep's next job, what is alive includes the last job's
    unreachable objects, which a freeze would keep for good.
    """
    global _frozen
    if _frozen or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    except BaseException:
        gc.enable()  # an import failed: nothing is frozen, so the collector can still free what it left
        raise
    gc.freeze()
    gc.enable()
    _frozen = True
