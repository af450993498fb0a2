"""The checks `.pre-commit-config.yaml` runs on every commit hold for the whole tree, with the same ruff."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from helpers import ROOT


@pytest.mark.slow  # starts ruff in processes of its own
def test_the_tree_passes_ruff_as_pre_commit_runs_it() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    (ruff,) = [repo for repo in hooks if repo["repo"].endswith("/ruff-pre-commit")]
    assert {hook["id"] for hook in ruff["hooks"]} == {"ruff", "ruff-format"}
    version = subprocess.run(
        [sys.executable, "-m", "ruff", "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert ruff["rev"] == f"v{version}"  # the hook and the dev extra format alike
    for command in (["check", "--quiet"], ["format", "--check", "--quiet"]):
        result = subprocess.run([sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
