"""What made a run: the code (git commit, branch, and the change from it, if the tree was modified), the
command, Python and the packages, the data files' checksums and the machine. Recorded under `provenance` in
`metrics.json`, with two files beside it in the run directory:

- `code.patch` (a modified tree only): `git diff HEAD --binary`, which `git apply` accepts on the recorded
  commit, plus each untracked file that git does not ignore, as a new file, if it is text and at most
  `UNTRACKED_PATCH_LIMIT` bytes (larger or binary ones are listed only);
- `environment.txt`: every installed distribution, `name==version`.

Git is asked twice at most (`git status`, then `git diff` for a modified tree): the whole record took a median
of 25 ms a run (42 ms for a modified tree; docs/reproduce.md). Outside a git checkout (an unpacked archive, an
installed package) or without git, the commit is "unknown", with no error.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_logreg.files import write_text

PATCH_FILE = "code.patch"
ENVIRONMENT_FILE = "environment.txt"
UNKNOWN = "unknown"
KEY_PACKAGES = (
    "torch",
    "lightning",
    "torchmetrics",
    "torchvision",
    "hydra-core",
    "omegaconf",
    "numpy",
    "mlflow-skinny",
    "wandb",
)
UNTRACKED_PATCH_LIMIT = 64_000  # bytes: source and config files, not data or checkpoints left lying around
GIT_TIMEOUT_S = 10


def record_provenance(output_dir: str | Path, datamodule: object = None) -> dict[str, Any]:
    """The run's provenance for `metrics.json`, with `code.patch` (a modified tree) and `environment.txt`
    written into `output_dir` (by rank 0 under DDP). The data files' checksums are those the data module
    verifies (its `checksums()`, if it has one): the run fails before it writes a record if they do not match.
    """
    import torch  # here: reproduce.py compares provenance without torch
    from lightning.pytorch.utilities import rank_zero_only

    output_dir = Path(output_dir)
    code, patch = code_version(Path(__file__).resolve().parent)
    versions = installed()
    # torch's own version names its build (`2.14.1+cu130`: for CUDA 13.0), which its wheel's name may not.
    versions["torch"] = torch.__version__
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # Lightning sets the rank on the function
        if patch:
            write_text(output_dir / PATCH_FILE, patch)
        write_text(output_dir / ENVIRONMENT_FILE, environment(versions))
    if patch:
        code["patch"] = PATCH_FILE
        code["patch_sha256"] = hashlib.sha256(patch.encode()).hexdigest()
    checksums = getattr(datamodule, "checksums", None)
    return {
        "code": code,
        "command": " ".join(["python", *map(shlex.quote, sys.argv)]),
        "python": platform.python_version(),
        "packages": key_packages(versions),
        "environment": ENVIRONMENT_FILE,
        "data": {path: f"md5:{md5}" for path, md5 in checksums().items()} if callable(checksums) else {},
        "host": host(),
    }


def code_version(where: Path) -> tuple[dict[str, Any], str]:
    """`({"commit", "branch", "modified", "untracked"}, patch)` for the git checkout that holds `where`; the
    patch is empty for an unmodified tree. `{"commit": "unknown"}` outside a checkout, or without git."""
    status = _git(where, "status", "--porcelain=v2", "--branch", "--untracked-files=all", "-z")
    if status is None:
        return {"commit": UNKNOWN}, ""
    commit, branch, changed, untracked = UNKNOWN, None, False, []
    entries = iter(status.split("\0"))
    for entry in entries:
        if entry.startswith("# branch.oid "):
            commit = entry.removeprefix("# branch.oid ")
        elif entry.startswith("# branch.head "):
            head = entry.removeprefix("# branch.head ")
            branch = None if head == "(detached)" else head
        elif entry.startswith("? "):
            untracked.append(entry[2:])
        elif entry.startswith(("1 ", "2 ", "u ")):
            changed = True
            if entry.startswith("2 "):
                next(entries, None)  # a rename's original path follows as an entry of its own
    if commit == "(initial)":  # a repository without a commit: nothing to apply a patch to
        return {"commit": UNKNOWN}, ""
    code: dict[str, Any] = {"commit": commit, "branch": branch, "modified": changed or bool(untracked)}
    if not code["modified"]:
        return code, ""
    diff = _git(where, "diff", "HEAD", "--binary") if changed else ""
    if diff is None:
        return code, ""
    code["untracked"] = untracked
    root = next(p for p in (where, *where.parents) if (p / ".git").exists())  # a worktree's is a file
    added = [new_file_diff(root, path) for path in untracked]  # paths relative to the root, as git gives them
    return code, diff + "".join(filter(None, added))


def new_file_diff(root: Path, path: str) -> str:
    """An untracked text file as git writes a new file in a patch; "" for a large or binary one."""
    file = root / path
    try:
        if not file.is_file() or file.is_symlink() or file.stat().st_size > UNTRACKED_PATCH_LIMIT:
            return ""
        text = file.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if "\0" in text or not text:
        return ""
    lines = text.split("\n")  # git's lines: "\r" and form feeds are characters of a line
    ends_with_newline = lines[-1] == ""
    if ends_with_newline:
        lines.pop()
    mode = "100755" if os.access(file, os.X_OK) else "100644"
    body = "".join(f"+{line}\n" for line in lines)
    if not ends_with_newline:
        body += "\\ No newline at end of file\n"
    return (
        f"diff --git a/{path} b/{path}\nnew file mode {mode}\n--- /dev/null\n+++ b/{path}\n"
        f"@@ -0,0 +1,{len(lines)} @@\n{body}"
    )


def _git(where: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(where), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # `git status` may not refresh the index here
        )
    except (OSError, subprocess.SubprocessError):  # no git on this machine, or it hangs
        return None
    return result.stdout if result.returncode == 0 else None


def installed() -> dict[str, str]:
    """Every installed distribution's version, by its normalised name (`hydra-core`).

    Read from the names of the `<name>-<version>.dist-info` directories on `sys.path` (the wheel format's
    own record): about 1 ms, where `importlib.metadata` parsing each distribution's metadata took 0.3 to
    0.6 s. An `.egg-info` (a legacy or source-tree install) is read through `importlib.metadata`."""
    found: dict[str, str] = {}
    for entry in reversed(sys.path):  # the first on sys.path is the one imported: it goes in last
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and "-" in name:
                distribution, version = name.removesuffix(".dist-info").split("-", 1)
            elif name.endswith(".egg-info"):
                metadata = importlib.metadata.Distribution.at(Path(entry or ".") / name).metadata
                distribution, version = (metadata["Name"], metadata["Version"]) if metadata else ("", "")
            else:
                continue
            if distribution and version:
                found[re.sub(r"[-_.]+", "-", distribution).lower()] = version
    return found


def key_packages(versions: dict[str, str]) -> dict[str, str]:
    """The versions of the packages that decide a run's numbers (those installed)."""
    return {name: versions[name] for name in KEY_PACKAGES if name in versions}


def environment(versions: dict[str, str]) -> str:
    """One `name==version` a line, sorted: a file that `pip install -r` takes."""
    return "".join(f"{name}=={version}\n" for name, version in sorted(versions.items()))


def host() -> dict[str, Any]:
    """The machine: its name, CPU model, cores, torch's threads, and the GPU where torch finds one."""
    import torch

    machine: dict[str, Any] = {
        "name": socket.gethostname(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        machine["gpu"] = {
            "name": torch.cuda.get_device_name(0),
            "count": torch.cuda.device_count(),
            "driver": gpu_driver(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
        }
    return machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_driver() -> str:
    """The NVIDIA driver's version (torch does not say it), from `nvidia-smi`; "unknown" without it."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    lines = result.stdout.split()
    return lines[0] if result.returncode == 0 and lines else UNKNOWN


def provenance_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two runs' provenance, one phrase each: the code (commit, modified tree, the
    change itself), Python and the key packages, the data files, the machine. Not the command, nor the
    host's name alone where its hardware is the same."""
    before, after = before or {}, after or {}
    pairs = [
        ("commit", _at(before, "code", "commit"), _at(after, "code", "commit")),
        ("modified tree", _at(before, "code", "modified"), _at(after, "code", "modified")),
        ("the change (code.patch)", _at(before, "code", "patch_sha256"), _at(after, "code", "patch_sha256")),
        ("Python", before.get("python"), after.get("python")),
    ]
    packages = [before.get("packages") or {}, after.get("packages") or {}]
    pairs += [
        (name, packages[0].get(name), packages[1].get(name))
        for name in dict.fromkeys([*packages[0], *packages[1]])
    ]
    files = [before.get("data") or {}, after.get("data") or {}]
    pairs += [
        (path, files[0].get(path), files[1].get(path)) for path in dict.fromkeys([*files[0], *files[1]])
    ]
    for key in ("cpu", "cores", "threads"):
        pairs.append(
            (f"CPU {key}" if key != "cpu" else "CPU", _at(before, "host", key), _at(after, "host", key))
        )
    for key in ("name", "driver", "cuda"):
        pairs.append((f"GPU {key}", _at(before, "host", "gpu", key), _at(after, "host", "gpu", key)))
    return [f"{what} {_shown(old)} -> {_shown(new)}" for what, old, new in pairs if old != new]


def _at(tree: dict[str, Any], *keys: str) -> Any:
    node: Any = tree
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return text[:12] if len(text) == 40 or len(text) == 64 else text  # a commit or a hash: its short form
