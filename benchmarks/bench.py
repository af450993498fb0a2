"""Side-by-side timing of `python train.py` against the classic tutorial's script, in one command.

    python benchmarks/bench.py [--rounds 3]

Each round runs every contender once, in turn (A B C D, A B C D, ...), so that a busy spell of the machine
falls on all of them alike; the table shows medians over the rounds and ratios to the tutorial's script:

  tutorial   benchmarks/tutorial.py: the reference script, per-sample PIL images through a DataLoader
  train.py   `python train.py`: the same settings with validation, test, TensorBoard and checkpoints
  tuned      `python train.py experiment=tuned` (Adam, batch 1000, 20 epochs)
  onecycle   `python train.py experiment=onecycle` (SGD, momentum, a one-cycle schedule, 5 epochs)
  deskewed   `python train.py experiment=deskewed` (deskewed images, Adam, 22 epochs)
  bare       `python train.py` with every feature off (no logger, callbacks, checkpoints, progress bar or
             sanity check; it still validates and tests): what Lightning and Hydra cost on their own
  plain      benchmarks/plain_loop.py: train.py's steps as a bare PyTorch loop, the floor for its fit time

Wall time is the whole process, from launch to exit; fit time is the training loop as each script reports
it; peak memory is the process's maximum resident set size (from `os.wait4`). Start-up is measured apart:
`python train.py --help`, and `benchmarks/startup.py` for imports, config and data.

    python benchmarks/bench.py --features [--rounds 3]

times what the loggers and the console cost instead, with ratios to `python train.py` as it is (its output
to a file: one line per epoch, TensorBoard):

  train.py   `python train.py`
  no logger  `python train.py ~logger`
  mlflow     `logger=mlflow`: MLflow instead of TensorBoard (a store in a temporary directory, shared by the
             rounds as a user's is by their runs: its tables are created in the first round)
  tb+mlflow  `logger=tensorboard_mlflow`: both
  terminal   `python train.py` in a pseudo-terminal: rich's live progress bar and coloured log levels
  no colour  `hydra/job_logging=default hydra/hydra_logging=default`: Hydra's plain logging, not colorlog
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# The recorded experiments and the test accuracy each must reach.
EXPERIMENTS = {"tuned": 0.926, "onecycle": 0.925, "deskewed": 0.955}
BARE = ("~logger", "~callbacks", "+trainer.enable_checkpointing=false", "+trainer.num_sanity_val_steps=0")


def run(command: list[str], terminal: bool = False) -> tuple[float, int, str]:
    """Run a child process: its wall time in seconds, its peak RSS in MB, and its stdout.

    `terminal`: its output goes to a pseudo-terminal, as in an interactive shell, instead of a file.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if terminal:
        return run_in_terminal(command, env)
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read()
    if child.returncode != 0:
        sys.exit(f"{' '.join(command)} failed with exit status {child.returncode}:\n{output[-3000:]}")
    return wall, usage.ru_maxrss // 1024, output  # Linux reports ru_maxrss in KB


def run_in_terminal(command: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    main, child_end = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:  # the terminal must be read while the child writes, or it blocks when full
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # the child closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=child_end, stderr=child_end)
    os.close(child_end)
    reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    reader.join()
    os.close(main)
    output = b"".join(chunks).decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed in a terminal:\n{output[-3000:]}")
    return wall, usage.ru_maxrss // 1024, output


def last_json_line(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def tutorial(_: Path) -> dict:
    wall, peak_mb, output = run([PYTHON, "benchmarks/tutorial.py"])
    return {"wall_s": wall, "peak_mb": peak_mb, **last_json_line(output)}


def plain(_: Path) -> dict:
    wall, peak_mb, output = run([PYTHON, "benchmarks/plain_loop.py"])
    return {"wall_s": wall, "peak_mb": peak_mb, **last_json_line(output)}


def train_py(*overrides: str, terminal: bool = False):
    def contender(run_dir: Path) -> dict:
        wall, peak_mb, _ = run([PYTHON, "train.py", *overrides, f"hydra.run.dir={run_dir}"], terminal)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return {"wall_s": wall, "peak_mb": peak_mb, **metrics}

    return contender


def startup(_: Path) -> dict:
    help_wall, _, _ = run([PYTHON, "train.py", "--help"])
    _, _, output = run([PYTHON, "benchmarks/startup.py"])
    return {"train.py --help": help_wall, **last_json_line(output)}


def median(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def table(results: dict[str, list[dict]], base_name: str = "tutorial") -> str:
    base = results[base_name]
    lines = [
        f"{'':<10} {'wall s':>7} {'fit s':>7} {'peak MB':>8} {'test acc':>9}"
        f"   {'wall ratio':>10} {'fit ratio':>9} {'mem ratio':>9} {'acc diff':>9}",
    ]
    for name, runs in results.items():
        wall, fit, mem, acc = (median(runs, k) for k in ("wall_s", "fit_time_s", "peak_mb", "test/acc"))
        ratios = (
            wall / median(base, "wall_s"),
            fit / median(base, "fit_time_s"),
            mem / median(base, "peak_mb"),
        )
        diff = 100 * (acc - median(base, "test/acc"))
        lines.append(
            f"{name:<10} {wall:7.2f} {fit:7.2f} {mem:8.0f} {acc:9.4f}"
            f"   {ratios[0]:10.3f} {ratios[1]:9.3f} {ratios[2]:9.3f} {diff:+8.2f}pt"
        )
    return "\n".join(lines)


def goals(results: dict[str, list[dict]], start: list[dict]) -> str:
    base_wall, base_acc = median(results["tutorial"], "wall_s"), median(results["tutorial"], "test/acc")
    train, plain_fit = results["train.py"], median(results["plain"], "fit_time_s")
    checks = [
        ("train.py wall <= 0.33 of the tutorial's", median(train, "wall_s") / base_wall, "<=", 0.33),
        ("train.py test acc within 1.5 points", abs(median(train, "test/acc") - base_acc) * 100, "<=", 1.5),
        ("train.py fit within 2.3x of the plain loop", median(train, "fit_time_s") / plain_fit, "<=", 2.3),
        ("`python train.py --help` under 2 s", median(start, "train.py --help"), "<", 2.0),
    ]
    for name, accuracy in EXPERIMENTS.items():
        checks += [
            (f"{name} test acc >= {accuracy}", median(results[name], "test/acc"), ">=", accuracy),
            (f"{name} wall <= 1/2 of the tutorial's", median(results[name], "wall_s") / base_wall, "<=", 0.5),
        ]
    passed = {"<=": float.__le__, "<": float.__lt__, ">=": float.__ge__}
    return "\n".join(
        f"  {'met ' if passed[op](float(value), limit) else 'MISSED'}  {name}: {value:.3f} ({op} {limit:.3f})"
        for name, value, op, limit in checks
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each, alternating (default 3)")
    parser.add_argument("--features", action="store_true", help="the loggers' and the console's costs")
    args = parser.parse_args()
    if args.features:
        features(args.rounds)
        return

    contenders = {"tutorial": tutorial, "train.py": train_py()}
    contenders.update({name: train_py(f"experiment={name}") for name in EXPERIMENTS})
    contenders["bare"] = train_py(*BARE)
    contenders["plain"] = plain
    contenders["startup"] = startup

    results: dict[str, list[dict]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for round_ in range(1, args.rounds + 1):
            for name, contender in contenders.items():
                result = contender(Path(tmp) / f"{name}-{round_}")
                results[name].append(result)
                shown = result.get("wall_s", result.get("total"))
                print(f"round {round_}/{args.rounds}  {name:<9} {shown:6.2f} s", flush=True)

    start = results.pop("startup")
    print(f"\nMedians of {args.rounds} rounds (ratios: to the tutorial's script):\n{table(results)}")
    print("\nStart-up (s):")
    print("\n".join(f"  {key:<28} {median(start, key):6.3f}" for key in start[0]))
    print(f"\nGoals:\n{goals(results, start)}")


def features(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        store = f"paths.log_dir={tmp}/logs"
        contenders = {
            "train.py": train_py(),
            "no logger": train_py("~logger"),
            "mlflow": train_py("logger=mlflow", store),
            "tb+mlflow": train_py("logger=tensorboard_mlflow", store),
            "terminal": train_py(terminal=True),
            "no colour": train_py("hydra/job_logging=default", "hydra/hydra_logging=default"),
        }
        results: dict[str, list[dict]] = {name: [] for name in contenders}
        for round_ in range(1, rounds + 1):
            for name, contender in contenders.items():
                result = contender(Path(tmp) / f"{name}-{round_}".replace(" ", "_"))
                results[name].append(result)
                print(f"round {round_}/{rounds}  {name:<9} {result['wall_s']:6.2f} s", flush=True)
    print(f"\nMedians of {rounds} rounds (ratios: to train.py):\n{table(results, 'train.py')}")


if __name__ == "__main__":
    main()
