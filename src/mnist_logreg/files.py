"""Result files (`metrics.json`, checkpoints, the ONNX model) written whole or not at all."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed to `path` when the block ends normally and removed otherwise.

    A reader never sees a half-written file, and a failed or killed write leaves the previous file in place.
    A write that fails (a full disk, a directory that cannot be written) raises an `OSError` that names
    `path`, whatever the writer was given: `errors.report_user_errors` turns it into one line.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")
