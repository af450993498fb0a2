"""What pruning saves on the default search: epochs trained and the best val/acc, with and without.

Runs `python train.py -m hparams_search=optuna` once per pruner (20 trials, the same sampler seed: by
default `hydra.sweeper.pruner=null`, then `median`) and prints a Markdown table. The trials are not tested
(`test=false`): testing takes time and changes neither the epochs nor val/acc. Each search takes minutes.

    python benchmarks/pruning.py [--n-trials 20] [--pruners null median hyperband] [extra overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def search(pruner: str, sweep_dir: Path, n_trials: int, extra: list[str]) -> dict[str, float]:
    """One search; its epochs trained (summed over the trials' metrics.json), best val/acc, trials pruned."""
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna",
        f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.pruner={pruner}", "test=false",
        "callbacks.progress_bar.refresh_rate=0", f"hydra.sweep.dir={sweep_dir}", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    started = time.perf_counter()
    subprocess.run(
        command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    seconds = time.perf_counter() - started
    records = [json.loads(path.read_text()) for path in sweep_dir.glob("*/metrics.json")]
    scores = [r["val/acc"] for r in records if r["status"] == "completed"]
    return {
        "trials": len(records),
        "pruned": sum(r["status"] == "pruned" for r in records),
        "epochs": sum(r.get("epochs", 0) for r in records),
        "best val/acc": max(scores),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--pruners", nargs="+", default=["null", "median"], help="the first is the baseline")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {p: search(p, Path(tmp) / p, args.n_trials, extra) for p in args.pruners}
    print("| pruner | trials | pruned | epochs trained | best val/acc | time (s) |")
    print("|---|---|---|---|---|---|")
    for pruner, r in results.items():
        print(
            f"| {pruner} | {r['trials']} | {r['pruned']} | {r['epochs']} | {r['best val/acc']:.4f} "
            f"| {r['seconds']:.0f} |"
        )
    baseline = results[args.pruners[0]]
    for pruner in args.pruners[1:]:
        saved = 1 - results[pruner]["epochs"] / baseline["epochs"]
        gap = 100 * (baseline["best val/acc"] - results[pruner]["best val/acc"])
        print(f"{pruner}: {saved:.0%} fewer epochs; best val/acc {gap:+.2f} points below {args.pruners[0]}")


if __name__ == "__main__":
    main()
