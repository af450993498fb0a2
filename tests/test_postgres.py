"""One Optuna study on a real PostgreSQL server (`postgres_url` in conftest.py), shared by three workers: the
checks of `test_study.py` for the journal file and SQLite, on the storage meant for many machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_study import check_shared_study


@pytest.mark.slow
def test_three_workers_share_one_study_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    assert postgres_url.startswith("postgresql+psycopg://")  # the driver of the `postgres` extra
    check_shared_study(postgres_url, tmp_path)
