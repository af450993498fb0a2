"""Every command that README.md and docs/ show for the entry points composes: a renamed option or config
group breaks this test, not a reader's first try. Sweeps compose with their sweeper and launcher."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from helpers import CONF_DIR, ROOT

ENTRY_POINTS = {
    "train.py": "train",
    "eval.py": "eval",
    "predict.py": "predict",
    "export.py": "export",
    "find_lr.py": "find_lr",
    "demo.py": "demo",
    "reproduce.py": "reproduce",
}
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the pages' `RUN=$(dirname "$(ls -td logs/runs/*/checkpoints | head -n 1)")` stands for.
RUN = "logs/runs/2026-01-01_00-00-00_000000"


def shown_commands() -> list[tuple[str, str]]:
    """(where, command) for each `python <entry point> ...` line in the pages' fenced bash blocks."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" # ")[0].strip()  # a comment after the command
                match = re.search(r"python (\S+\.py)(.*)$", line)
                if match and Path(match.group(1)).name in ENTRY_POINTS and match.group(1).count("/") == 0:
                    found.append((page.relative_to(ROOT).as_posix(), line[match.start() :]))
    return found


COMMANDS = shown_commands()


def representative(override: str) -> str:
    """A sweep override (`a=1,2`, `a=range(1,4)`, `a=tag(log, interval(1e-4, 1))`) as one of its values."""
    parsed = OverridesParser.create().parse_override(override)
    if not parsed.is_sweep_override():
        return override
    value = parsed.value()
    if isinstance(value, ChoiceSweep):
        first = value.list[0]
    elif isinstance(value, (RangeSweep, IntervalSweep)):
        first = value.start
    else:
        raise AssertionError(f"unknown sweep {override}")
    return f"{parsed.get_key_element()}={first}"


def test_the_pages_show_commands() -> None:
    assert len(COMMANDS) >= 20
    assert {"train.py", "eval.py", "predict.py", "export.py"} <= {c.split()[1] for _, c in COMMANDS}


@pytest.mark.slow  # about 70 commands, each composed whole by Hydra: seconds, not the fast tier's moments
@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}: {c}" for p, c in COMMANDS])
def test_a_shown_command_composes(page: str, command: str) -> None:
    words = shlex.split(command.replace("$RUN", RUN))
    script, arguments = words[1], words[2:]
    multirun = "-m" in arguments or "--multirun" in arguments
    overrides = [a for a in arguments if not a.startswith("-")]
    if "--cfg" in arguments or "-p" in arguments:  # `--cfg job -p KEY`: KEY is not an override
        overrides = [a for a in overrides if "=" in a]
    if multirun:
        overrides = [representative(o) for o in overrides]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(ENTRY_POINTS[script], overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.run.dir and cfg.hydra.sweep.dir
    if multirun:
        assert cfg.hydra.sweeper._target_ and cfg.hydra.launcher._target_
