"""One run at a time per schedule, across every process that shares the database.

The UNIQUE(schedule, slot) constraints make a slot run once; this lock makes runs of
*different* slots of one schedule take turns, so that ``only_new`` always sees what the
previous run inserted (two overlapping runs would otherwise both find the same new files).

PostgreSQL: a session-level advisory lock on a connection held for the run (released by
the server if the process dies). SQLite: ``flock`` on a file per schedule in a folder
next to the database (released by the kernel if the process dies).
Both are tried without waiting: a busy schedule is someone else's to run right now.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, func, select

log = logging.getLogger(__name__)

WAIT_POLL_SECONDS = 0.25


class ScheduleLocks(Protocol):
    def hold(self, name: str) -> AbstractContextManager[bool]:
        """Try to take ``name``'s lock; yields whether it was taken."""
        ...


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock``."""
    digest = hashlib.sha256(f"qocr.schedule:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLocks:
    """PostgreSQL advisory locks, one key per schedule name."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        key = lock_key(name)
        with self.engine.connect() as connection:
            taken = bool(connection.scalar(select(func.pg_try_advisory_lock(key))))
            connection.commit()  # a session-level lock outlives the transaction
            try:
                yield taken
            finally:
                if taken:
                    try:
                        connection.scalar(select(func.pg_advisory_unlock(key)))
                        connection.commit()
                    except Exception:
                        # Closing the connection releases the lock on the server.
                        connection.invalidate()
                        log.warning("could not unlock schedule %s; connection closed", name)


class FileLocks:
    """``flock`` on one file per schedule, in a folder next to a SQLite database.

    ``flock`` (unlike ``lockf``) belongs to the open file, so two threads of one worker
    process exclude each other too.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        self.folder.mkdir(mode=0o700, exist_ok=True)
        digest = hashlib.sha256(name.encode()).hexdigest()[:24]
        fd = os.open(self.folder / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


class ThreadLocks:
    """In-process locks, for an in-memory SQLite database only one process can see."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        taken = lock.acquire(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                lock.release()


def schedule_locks(engine: Engine) -> ScheduleLocks:
    """The right kind of lock for the engine's database."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLocks(engine)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        return FileLocks(Path(f"{database}.schedule-locks"))
    return ThreadLocks()


@contextmanager
def wait_for(locks: ScheduleLocks, name: str, timeout: float) -> Iterator[bool]:
    """Take ``name``'s lock, retrying for up to ``timeout`` seconds; yields whether taken."""
    deadline = time.monotonic() + timeout
    while True:
        with locks.hold(name) as taken:
            if taken or time.monotonic() >= deadline:
                yield taken
                return
        time.sleep(WAIT_POLL_SECONDS)
