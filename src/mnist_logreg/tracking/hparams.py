"""What a run is compared by, in TensorBoard's HParams tab, in MLflow and in W&B: its settings, flattened; and
its row in the HParams table."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mnist_logreg.outputs import Status
from mnist_logreg.runtime import PARTS, group_choices, in_multirun

if TYPE_CHECKING:
    from tensorboard.compat.proto.summary_pb2 import Summary

# What a person compares runs by: the settings of the run's parts (`runtime.PARTS`), and these keys.
HPARAMS_KEYS = ("seed", "tags")

HParamValue = bool | int | float | str

STATUS = "status"  # the HParams column of how a run ended: completed, pruned, failed or interrupted
# The HParams tab shows a session's metric as the last value of its tag in the run. Under their own tags,
# so that the tested checkpoint's values add no point to the training curves of `val/acc` and `test/acc`.
HPARAMS_METRICS = {"val/acc": "hparams/val_acc", "test/acc": "hparams/test_acc"}
ROW_SUFFIX = ".hparams"  # the end of the name of the event file that holds a run's HParams row


def hyperparameters(cfg: DictConfig) -> dict[str, HParamValue]:
    """The settings that make two runs train differently: the option chosen in each group (`optimizer:
    sgd`), the values of the data, model, optimizer, scheduler and trainer settings, the seed and the tags.

    Not the class paths (`_target_`: the group's option names them), nor the callbacks, loggers and paths.
    """
    kept = {
        key: value
        for key, value in flatten_config(cfg).items()
        if (key.split("/")[0] in PARTS or key in HPARAMS_KEYS)
        and not key.split("/")[-1].startswith("_")  # `_target_`, `_partial_`
        and not key.endswith("_dir")  # a data directory given as a path: where, not how
    }
    kept.pop("trainer/plugins", None)  # how checkpoints are written, not how the model trains
    kept["tags"] = ", ".join(map(str, cfg.get("tags") or []))
    return {**group_choices(), **kept}


def flatten_config(cfg: DictConfig) -> dict[str, HParamValue]:
    """`{"optimizer/lr": 0.01, ...}`: the resolved config without the settings that say where, not how, a
    run trained (`paths`, and those set from them or from Hydra's runtime: each job of a sweep has its own).

    Nulls are left out and lists written as text: HParams holds numbers, strings and booleans only.
    """
    # A DictConfig converts to a dict; a composed config's keys are strings.
    raw = _flatten(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=False)))
    resolved = _flatten(cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=True)))
    flat: dict[str, HParamValue] = {}
    for key, value in resolved.items():
        where = key.startswith("paths/") or (
            isinstance(raw[key], str) and re.search(r"\$\{(paths\.|hydra:)", raw[key])
        )
        if value is None or where:
            continue
        flat[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def varied(hparams: dict[str, HParamValue]) -> list[str]:
    """The names in `hparams` of what a run varies (`optimizer.lr` -> `optimizer/lr`, `optimizer=adam` ->
    `optimizer`): in a sweep's job, the keys its sweep varies (the sweeps of the command line, `lr=0.1,0.5`,
    and the search space, `hydra.sweeper.params`, as the sweep dir's `multirun.yaml` keeps them); in a
    single run, its overrides."""
    if not HydraConfig.initialized():
        return []
    hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task)
    multirun = Path(hydra.runtime.output_dir).parent / "multirun.yaml"
    if in_multirun() and multirun.is_file():
        from hydra.core.override_parser.overrides_parser import OverridesParser

        sweep = OmegaConf.load(multirun).hydra
        parsed = OverridesParser.create().parse_overrides(list(sweep.overrides.task))
        overrides = [o.get_key_element() for o in parsed if o.is_sweep_override()]
        overrides += list(OmegaConf.select(sweep, "sweeper.params") or {})
    keys = [item.partition("=")[0].lstrip("+~").replace(".", "/") for item in overrides]
    return [key for key in keys if key in hparams]


def session_summaries(
    hparams: dict[str, HParamValue], status: str, trial_id: str, metric_tags: dict[str, str] = HPARAMS_METRICS
) -> list[Summary]:
    """A run's row in TensorBoard's HParams table, as the summaries its hparams plugin reads: the table's
    columns (an `Experiment`), the run's values with its `status` (`summary_v2.hparams_pb`, named `trial_id`:
    the job's directory) and its end (a `SessionEndInfo`).

    TensorBoard orders the columns by whether their values differ (`HParamInfo.differs`), then by name, and
    takes the columns of one run for the whole table: the status and what the run varies (`varied`: a
    sweep's swept keys) are marked as differing, so that they come first, before the constant settings.
    """
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2

    values = {STATUS: status, **hparams}
    first = {STATUS, *varied(hparams)}
    types = {bool: api_pb2.DATA_TYPE_BOOL, str: api_pb2.DATA_TYPE_STRING}
    columns = [
        api_pb2.HParamInfo(
            name=key, type=types.get(type(value), api_pb2.DATA_TYPE_FLOAT64), differs=key in first
        )
        for key, value in values.items()
    ]
    metrics = [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=name)
        for name, tag in metric_tags.items()
    ]
    # TensorBoard's own statuses, which its status filter offers: a pruned or interrupted run is neither.
    ended: dict[str, Any] = {Status.COMPLETED: api_pb2.STATUS_SUCCESS, Status.FAILED: api_pb2.STATUS_FAILURE}
    experiment = plugin_data_pb2.HParamsPluginData(
        experiment=api_pb2.Experiment(hparam_infos=columns, metric_infos=metrics)
    )
    end = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=ended.get(status, api_pb2.STATUS_UNKNOWN))
    )
    return [
        _plugin_summary(metadata.EXPERIMENT_TAG, experiment),
        summary_v2.hparams_pb(values, trial_id=trial_id),
        _plugin_summary(metadata.SESSION_END_INFO_TAG, end),
    ]


def _plugin_summary(tag: str, data: Any) -> Summary:
    """A summary of the hparams plugin's `data` under `tag`, as `tensorboard.plugins.hparams.summary_v2`
    writes its own (its public functions write the columns without `differs`, and no session end)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata

    summary = Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary


def write_row(
    log_dir: str | Path, run_dir: str | Path, hparams: dict[str, HParamValue], status: str, metrics: dict
) -> None:
    """Write the row of the run in `run_dir` into `log_dir` (its TensorBoard logger's directory), in an
    event file of its own: the run directory's name as its ID, `status`, and the values of `HPARAMS_METRICS`
    in `metrics` (its `metrics.json`).

    TensorBoard keeps the first HParams record it reads of a run: a run that goes on in its directory (a
    resume) removes its earlier row (`remove_rows`) before it writes another.
    """
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(log_dir), filename_suffix=ROW_SUFFIX) as writer:
        for summary in session_summaries(hparams, status, Path(run_dir).name):
            writer.file_writer.add_summary(summary)
        for name, tag in HPARAMS_METRICS.items():
            if isinstance(metrics.get(name), (int, float)):
                writer.add_scalar(tag, metrics[name])


def write_missing_rows(cfg: DictConfig, status: str, metrics: dict[str, Any] | None = None) -> None:
    """The row of a job that ended before its run record could write one (a setting its config check
    refused, a model it could not build): in each TensorBoard logger's directory that has no row yet."""
    from hydra.utils import get_object, instantiate
    from lightning.pytorch.loggers import TensorBoardLogger

    for node in (cfg.get("logger") or {}).values():
        target = get_object(node._target_) if node is not None and "_target_" in node else None
        if not (isinstance(target, type) and issubclass(target, TensorBoardLogger)):
            continue
        log_dir = Path(instantiate(node).log_dir)
        if not any(log_dir.glob(f"events.out.tfevents.*{ROW_SUFFIX}")):
            write_row(log_dir, cfg.paths.output_dir, hyperparameters(cfg), status, metrics or {})


def remove_rows(log_dir: str | Path) -> None:
    for path in Path(log_dir).glob(f"events.out.tfevents.*{ROW_SUFFIX}"):
        path.unlink()


def _flatten(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
