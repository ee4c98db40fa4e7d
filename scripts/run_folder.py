"""The folder of one run of private servers: ``.state/run-…``, locked while the run lives.

Two runs never share a folder. A run killed with SIGKILL leaves its servers and folder behind
with its lock free: the next run stops those servers (only if their pid still runs the same
program) and deletes the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypedDict

PIDS_FILE = "servers.json"
# A file naming a folder outside .state that belongs to the run (see private_servers.py).
OUTSIDE_HOME_FILE = "pg_home"


class Started(TypedDict):
    """What servers.json keeps of a server, for the sweep of a killed run."""

    pid: int
    executable: str


@dataclass
class RunFolder:
    """``.state/run-…``: this run's servers, locked while the run lives."""

    path: Path
    lock: IO[bytes]

    def record(self, name: str, process: subprocess.Popen[bytes], executable: Path) -> None:
        pids = _read_pids(self.path)
        pids[name] = Started(pid=process.pid, executable=str(executable))
        (self.path / PIDS_FILE).write_text(json.dumps(pids))

    def remove(self) -> None:
        _remove_folder(self.path)
        self.lock.close()


@contextlib.contextmanager
def run_folder(state: Path) -> Iterator[RunFolder]:
    """A fresh locked folder under ``state``; stale folders of dead runs are cleared first."""
    state.mkdir(exist_ok=True)
    sweep_stale_runs(state)
    # Locked before it gets its run- name, so a sweep never sees it unlocked.
    draft = Path(tempfile.mkdtemp(prefix=".new-", dir=state))
    lock = (draft / "lock").open("wb")
    # The descriptor is not inherited: the lock dies with this process, whatever kills it.
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    path = state / f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    draft.rename(path)
    folder = RunFolder(path, lock)
    try:
        yield folder
    finally:
        folder.remove()


def sweep_stale_runs(state: Path) -> None:
    """Stop the servers of runs whose lock is free (killed runs) and delete their folders."""
    for path in sorted(state.glob("run-*")):
        try:
            with (path / "lock").open("ab") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                for entry in _read_pids(path).values():
                    _kill_if_ours(entry["pid"], Path(entry["executable"]))
        except BlockingIOError:
            continue  # a live run
        except OSError:
            pass  # no lock file: not a folder of ours as it should be
        _remove_folder(path)


def _read_pids(path: Path) -> dict[str, Started]:
    try:
        pids: dict[str, Started] = json.loads((path / PIDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return pids


def _kill_if_ours(pid: int, executable: Path) -> None:
    """SIGKILL ``pid`` if it still runs ``executable`` (a reused pid is left alone)."""
    try:
        running = Path(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return
    if running == executable.resolve():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _remove_folder(path: Path) -> None:
    home = path / OUTSIDE_HOME_FILE
    if home.is_file():  # PostgreSQL's data lived outside .state (see _postgres_home)
        shutil.rmtree(home.read_text().strip(), ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
