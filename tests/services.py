"""Real services for the tests, started in a temporary directory and stopped after: a PostgreSQL server and a
one-node SLURM cluster on localhost. Both come from Debian's packages (`.ci/run` installs them); a machine
without them fails the tests that need them with the command that installs them, never a silent skip."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

INSTALL = "apt-get install postgresql slurm-wlm munge (as root; .ci/run does it)"


class ServiceMissing(RuntimeError):
    """A program a service needs is not installed."""


def require(program: str | Path) -> str:
    path = shutil.which(str(program))
    if path is None:
        raise ServiceMissing(f"{program} not found: the tests need a real service; {INSTALL}")
    return path


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    """Run a start or setup command; if it fails, raise with what it printed."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(ready: Callable[[], bool], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            raise RuntimeError(f"no sign of {what} within {timeout:.0f} s; {log}:\n{tail}")
        time.sleep(0.1)


def as_user(user: str, command: list[str]) -> list[str]:
    """`command` run as `user` when we are root (PostgreSQL and munged refuse root), else as we are."""
    return ["runuser", "-u", user, "--", *command] if os.geteuid() == 0 else command


def own(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user, user)


# PostgreSQL ---------------------------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """Where the server's programs are: Debian keeps them off the PATH, one directory per major version."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not debian:
        raise ServiceMissing(f"PostgreSQL's pg_ctl not found: the tests need a real server; {INSTALL}")
    return debian[-1].parent


@contextmanager
def postgres_server(root: Path, fsync: bool = False) -> Iterator[str]:
    """A PostgreSQL server on a free loopback port, its data in `root`, trusting local connections, and by
    default without `fsync` (the tests' data need not survive a power cut). Yields the base URL
    (`postgresql+psycopg://postgres@127.0.0.1:<port>`), to which a database name is appended."""
    bin_dir = postgres_bin_dir()
    pg_ctl = str(bin_dir / "pg_ctl")
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    own(root, user)
    data, log = root / "data", root / "postgres.log"
    port = free_port()
    run(as_user(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]))
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    options += "" if fsync else " -c fsync=off"
    start = [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"]
    run(as_user(user, start))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user(user, [pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True)


def create_database(base_url: str, name: str) -> str:
    """A fresh, empty database on the server at `base_url`; returns its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(base_url.replace("postgresql+psycopg", "postgresql") + "/postgres") as connection:
        connection.autocommit = True
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{base_url}/{name}"


# SLURM --------------------------------------------------------------------------------------------------

SLURM_CONF = """\
ClusterName=tests
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge.socket,cred_expire=5
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=tests Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@contextmanager
def slurm_cluster(root: Path) -> Iterator[dict[str, str]]:
    """A one-node SLURM cluster on localhost, run as root: munged (as the munge user) with a random key,
    slurmctld and slurmd. Yields the environment its clients need (`SLURM_CONF`), to add to `os.environ`."""
    munged, slurmctld, slurmd = (require(p) for p in ("munged", "slurmctld", "slurmd"))
    require("sbatch")
    if os.geteuid() != 0:
        raise ServiceMissing("the one-node SLURM cluster of the tests runs as root (SlurmUser=root)")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # munged, run as munge, makes its socket here
    own(root, "munge")
    for sub in ("state", "spool"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    own(key, "munge")
    processes: list[Path] = []
    try:
        munge_files = [f"--socket={root}/munge.socket", f"--key-file={key}", f"--pid-file={root}/munged.pid"]
        munge_files += [f"--log-file={root}/munged.log", f"--seed-file={root}/munged.seed"]
        run(as_user("munge", [munged, *munge_files]))
        processes.append(root / "munged.pid")
        # The machine's CPUs, at least two, so that two one-CPU jobs run together (config_overrides lets the
        # node offer what slurm.conf says); half its memory.
        cpus = max(2, os.cpu_count() or 1)
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 // 2
        conf = root / "slurm.conf"
        conf.write_text(
            SLURM_CONF.format(
                root=root, ctld_port=free_port(), d_port=free_port(), cpus=cpus, memory_mb=memory_mb
            )
        )
        env = {"SLURM_CONF": str(conf)}
        full_env = {**os.environ, **env}
        run([slurmctld, "-f", str(conf)], env=full_env)
        processes.append(root / "slurmctld.pid")
        run([slurmd, "-f", str(conf), "-N", "localhost"], env=full_env)
        processes.append(root / "slurmd.pid")

        def node_idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=full_env, capture_output=True, text=True)
            return out.stdout.strip() == "idle"

        wait_for(node_idle, "the SLURM node being up", root / "slurmctld.log")
        yield env
    finally:
        try:
            if len(processes) == 3:  # all three started: end the jobs first, or their steps outlive slurmd
                end_jobs(full_env, root / "slurmctld.log")
        finally:
            stop_daemons(processes)


def end_jobs(env: dict[str, str], log: Path) -> None:
    """Cancel the cluster's jobs and wait until they are gone. A sweep's launcher returns once its jobs have
    written their results, while SLURM may still be ending them; a job a failed test left may still run."""
    subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)

    def no_jobs() -> bool:
        squeue = subprocess.run(["squeue", "--noheader"], env=env, capture_output=True, text=True)
        return squeue.returncode == 0 and not squeue.stdout.strip()

    wait_for(no_jobs, "the end of the cluster's jobs", log)


def stop_daemons(pid_files: list[Path], timeout: float = 10) -> None:
    """SIGTERM to the daemons whose pids the files hold, then wait until they are gone (SIGKILL after
    `timeout`)."""
    pids = []
    for pid_file in pid_files:
        with suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
    deadline = time.monotonic() + timeout
    while pids:
        for pid in list(pids):
            try:
                os.kill(pid, signal.SIGKILL if time.monotonic() > deadline else 0)
            except ProcessLookupError:
                pids.remove(pid)
        time.sleep(0.05)
