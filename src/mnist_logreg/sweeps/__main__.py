"""`python -m mnist_logreg.sweeps DIR`: a sweep's summary and plots written now, as its end would write them;
an Optuna study's as far as it has got (`--storage`, `--study-name`), without running a trial."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from mnist_logreg.errors import UserError
from mnist_logreg.files import write_text
from mnist_logreg.sweeps.plots import SweepPlots, optuna_plots
from mnist_logreg.sweeps.study import STUDY_FILE, absolute, open_storage
from mnist_logreg.sweeps.summary import SweepSummary, compare


def report(sweep_dir: Path, metric: str | None = None, mode: str | None = None) -> None:
    """Write a sweep's summary and plots now, as its end would: a study's as far as it has got."""
    default_metric, default_mode = "val/acc", "max"
    if (sweep_dir / STUDY_FILE).exists():
        import optuna

        named = OmegaConf.load(sweep_dir / STUDY_FILE)
        study = optuna.load_study(study_name=str(named.study_name), storage=open_storage(str(named.storage)))
        default_metric = study.user_attrs.get("metric", default_metric)
        default_mode = "min" if study.direction == optuna.study.StudyDirection.MINIMIZE else "max"
        optuna_plots(study, sweep_dir)
    elif (sweep_dir / "multirun.yaml").exists():
        multirun = OmegaConf.load(sweep_dir / "multirun.yaml")
        default_metric = OmegaConf.select(multirun, "optimized_metric", default=default_metric)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}})
    metric, mode = metric or default_metric, mode or default_mode
    SweepPlots(metric, mode).on_multirun_end(config)
    SweepSummary(metric, mode, allow_failed_jobs=True).on_multirun_end(config)


def main(argv: list[str] | None = None) -> None:
    """`python -m mnist_logreg.sweeps`: report a sweep, or a study, without running anything; or compare
    two sweeps (`python -m mnist_logreg.sweeps compare DIR_A DIR_B`)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        compare_main(argv[1:])
        return
    parser = argparse.ArgumentParser(
        prog="python -m mnist_logreg.sweeps",
        description="Write the summary (summary.md, summary.csv) and plots of a sweep, or of an Optuna study "
        "as far as it has got, without running a trial.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep dir; with --storage, where to write")
    parser.add_argument(
        "--storage", help="a study's storage: sqlite:///search.db, postgresql://..., x.journal"
    )
    parser.add_argument("--study-name", help="the study's name in --storage")
    parser.add_argument("--metric", help="what the values are (default: the study's or sweep's)")
    parser.add_argument("--mode", choices=("max", "min"), help="whether higher or lower is better")
    args = parser.parse_args(argv)
    if args.storage:
        if not args.study_name:
            parser.error("--storage needs --study-name")
        study = {"storage": absolute(args.storage), "study_name": args.study_name}
        write_text(args.sweep_dir / STUDY_FILE, OmegaConf.to_yaml(study))
    elif not args.sweep_dir.is_dir():
        parser.error(f"{args.sweep_dir} is not a directory: give a sweep dir, or --storage and --study-name")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report(args.sweep_dir, args.metric, args.mode)


def compare_main(argv: list[str]) -> None:
    """`python -m mnist_logreg.sweeps compare DIR_A DIR_B`: print the paired comparison; exit 2 if none."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_logreg.sweeps compare",
        description="Compare two sweeps, or two folders of run directories, on the seeds and folds they "
        "share: the best configuration of each, and A minus B with its 95%% interval (paired t).",
    )
    parser.add_argument("dir_a", type=Path, help="a sweep dir, or a folder of run directories")
    parser.add_argument("dir_b", type=Path, help="the same, for the other side")
    parser.add_argument("--metric", default="val/acc", help="what to compare (default: val/acc)")
    parser.add_argument("--mode", choices=("max", "min"), default="max", help="whether higher is better")
    args = parser.parse_args(argv)
    try:
        lines = compare(args.dir_a, args.dir_b, args.metric, args.mode)
    except UserError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
