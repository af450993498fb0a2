"""The collector skips what the first imports leave alive, and freezes nothing in a sweep's later jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import ROOT


def run_python(script: str) -> str:
    """Run `script` in a fresh interpreter: a freeze lasts for the life of a process."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_imports_frozen_collects_nothing_inside_then_freezes_once() -> None:
    # In a child process: a freeze lasts for the life of the process, and pytest's objects must not be frozen.
    script = textwrap.dedent(
        """
        import gc
        from mnist_logreg.collector import imports_frozen

        assert gc.get_freeze_count() == 0
        with imports_frozen():
            assert not gc.isenabled()
            libraries = [[i] for i in range(10_000)]  # 10,001 tracked containers, alive after the block
        assert gc.isenabled()
        first = gc.get_freeze_count()
        assert first > 10_000, first
        garbage = [[i] for i in range(10_000)]
        with imports_frozen():  # a sweep's next job: nothing more is frozen, collection stays on
            assert gc.isenabled()
        assert gc.get_freeze_count() == first
        print("ok")
        """
    )
    assert run_python(script) == "ok"


def test_a_failed_import_freezes_nothing_and_leaves_the_collector_on() -> None:
    script = textwrap.dedent(
        """
        import gc
        from mnist_logreg.collector import imports_frozen

        try:
            with imports_frozen():
                import no_such_library_here  # noqa: F401
        except ImportError:
            pass
        assert gc.isenabled() and gc.get_freeze_count() == 0
        with imports_frozen():  # the next attempt still freezes
            kept = [[i] for i in range(1000)]
        assert gc.get_freeze_count() > 1000
        print("ok")
        """
    )
    assert run_python(script) == "ok"
