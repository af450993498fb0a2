"""What Python's garbage collector costs a run, with the libraries frozen at import (as the entry points do)
and without: collections and their time during the imports and during the run that follows
(`mnist_logreg.pipeline.train`: fit, test, figures, as `python train.py` runs them).

    python benchmarks/gc_cost.py [--rounds 3]

Each measurement is a fresh process. Also prints the objects frozen, and the unreachable objects found at the
end once unfrozen: with the freeze, these include what it kept from ever being collected.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = (
    "torch",
    "torchvision",
    "lightning",
    "hydra.utils",
    "mnist_logreg.pipeline",
)  # as the entry points


def child(frozen: bool) -> None:
    import contextlib
    import gc
    import importlib
    import io
    import logging
    import tempfile

    spent = {"gc_s": 0.0, "collections": 0, "full": 0}
    started_at: list[float] = []

    def clock(phase: str, info: dict) -> None:
        if phase == "start":
            started_at.append(time.perf_counter())
            return
        spent["gc_s"] += time.perf_counter() - started_at.pop()
        spent["collections"] += 1
        spent["full"] += info["generation"] == 2

    gc.callbacks.append(clock)
    from mnist_logreg.collector import imports_frozen

    started = time.perf_counter()
    with imports_frozen() if frozen else contextlib.nullcontext():
        for name in LIBRARIES:
            importlib.import_module(name)
    result = {"import_s": time.perf_counter() - started, **{f"import_{k}": v for k, v in spent.items()}}
    result["frozen_objects"] = gc.get_freeze_count()

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from breakdown import compose_run

    from mnist_logreg.pipeline import train

    logging.disable(logging.WARNING)
    spent.update(gc_s=0.0, collections=0, full=0)
    with tempfile.TemporaryDirectory(prefix="gc-cost-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        metrics = train(compose_run(["callbacks.progress_bar.refresh_rate=0"], tmp))
    result.update({"fit_s": metrics["fit_time_s"], **{f"run_{k}": v for k, v in spent.items()}})
    gc.unfreeze()
    result["unreachable_at_end"] = gc.collect()  # frozen: includes what the freeze kept from being collected
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes of each, alternating")
    parser.add_argument("--child", choices=["frozen", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child == "frozen")

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    runs: dict[str, list[dict]] = {"frozen": [], "plain": []}
    for _ in range(args.rounds):
        for mode, results in runs.items():
            command = [sys.executable, __file__, "--child", mode]
            output = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            results.append(json.loads(output.stdout.strip().splitlines()[-1]))
    keys = list(runs["frozen"][0])
    print(f"Medians of {args.rounds} fresh processes each:")
    print(f"  {'':<22} {'frozen at import':>17} {'collector as usual':>19}")
    for key in keys:
        frozen, plain = (statistics.median(r[key] for r in runs[mode]) for mode in ("frozen", "plain"))
        print(f"  {key:<22} {frozen:17.3f} {plain:19.3f}")


if __name__ == "__main__":
    main()
