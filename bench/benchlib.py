"""What every benchmark shares: the machine, scratch services, processes, images, output.

A benchmark assembles a real deployment the way the acceptance tests do: a fresh PostgreSQL
database (created here, dropped at the end), a Redis database number of its own (flushed
before and after), the emulator as a ``qocr emulator`` subprocess on loopback, and
``qocr worker`` subprocesses, each in its own process group. Every wait is bounded.

Each benchmark prints human lines and, last, one ``BENCH_JSON {...}`` line; with
``--json-out PATH`` it also writes that JSON document to PATH (what ``run_all.py`` and
``report.py`` read).
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import io
import json
import os
import platform
import re
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
OUT = BENCH / "out"
PYTHON = sys.executable
QOCR = [PYTHON, "-m", "qocr"]
API_KEY = "sk-bench-0123456789"
MODEL = "qwen-vl-ocr-latest"

PG_ADMIN_URL = os.environ.get(
    "QOCR_BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST_URL = os.environ.get("QOCR_BENCH_REDIS_URL", "redis://127.0.0.1:6379")
# The pipeline's broker/throttle database, and the one of the comparison systems.
REDIS_DB_PIPELINE = 10
REDIS_DB_OTHER = 11


# -- clean exits -----------------------------------------------------------------------

# Every process a benchmark starts; whatever is still alive at exit is killed with its group.
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _kill_children() -> None:
    for process in _CHILDREN:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM (run_all's time bound, `timeout`, a CI cancel) unwinds like an exception, so
    # every `finally` runs: workers stopped, scratch databases dropped, Redis flushed.
    raise SystemExit(128 + signum)


atexit.register(_kill_children)
signal.signal(signal.SIGTERM, _terminate)


# -- output ----------------------------------------------------------------------------


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the figures)."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="Laptop/CI size (well under 1 min).")
    parser.add_argument("--json-out", type=Path, help="Also write the JSON document here.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the scratch database and logs (debugging)."
    )
    return parser


def emit(document: dict[str, Any], json_out: Path | None) -> None:
    """Print the figures (indented JSON) and the one-line form; write it to ``json_out``."""
    print(json.dumps(document, indent=2, sort_keys=False, default=str))
    print("BENCH_JSON " + json.dumps(document, default=str), flush=True)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2, default=str) + "\n")


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# -- the machine -----------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def machine_info() -> dict[str, Any]:
    """CPU, cores, RAM, load, Python, Redis, PostgreSQL, Celery and the git commit."""
    import celery
    import kombu

    info: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "celery": celery.__version__,
        "kombu": kombu.__version__,
    }
    try:
        client = redis.Redis.from_url(f"{REDIS_HOST_URL}/0")
        info["redis"] = client.info("server")["redis_version"]
        client.close()
    except redis.RedisError as exc:
        info["redis"] = f"unavailable ({type(exc).__name__})"
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            info["postgresql"] = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    except Exception as exc:
        info["postgresql"] = f"unavailable ({type(exc).__name__})"
    commit = _git("rev-parse", "--short=12", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    info["git_commit"] = commit
    info["git_dirty"] = bool(dirty)
    if dirty:
        # Which uncommitted tree was measured: a digest of the diff and the untracked files.
        diff = _git("diff", "HEAD") or ""
        untracked = _git("ls-files", "--others", "--exclude-standard") or ""
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(diff.encode())
        for name in sorted(untracked.splitlines()):
            path = REPO / name
            digest.update(name.encode())
            if path.is_file() and path.stat().st_size < 1_000_000:
                digest.update(path.read_bytes())
        info["git_tree_digest"] = digest.hexdigest()[:12]
    return info


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"load {info['load_avg_1_5_15']}, Python {info['python']}, Redis {info['redis']}, "
        f"PostgreSQL {info['postgresql']}, Celery {info['celery']}, "
        f"commit {info['git_commit']}{' (dirty tree)' if info['git_dirty'] else ''}"
    )


# -- scratch services ------------------------------------------------------------------


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@contextmanager
def scratch_database(prefix: str = "qocr_bench", migrate: bool = True) -> Iterator[str]:
    """A fresh PostgreSQL database (migrated to head), dropped afterwards."""
    from qocr.migrations import migrate as migrations
    from qocr.models.db import make_engine

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(name)
    try:
        if migrate:
            engine = make_engine(url)
            migrations.upgrade(engine)
            engine.dispose()
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def scratch_redis(db: int) -> Iterator[str]:
    """Redis database ``db``, empty before and after."""
    url = f"{REDIS_HOST_URL}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def redis_used_memory(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


def redis_command_calls(url: str) -> dict[str, int]:
    """Server-wide calls per command (``INFO commandstats``), for deltas."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }


def counter_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = set(before) | set(after)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}


# -- processes -------------------------------------------------------------------------


def child_env(**overrides: str) -> dict[str, str]:
    """This environment minus stray QOCR_ settings and keys, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOCR_")}
    env.pop("DASHSCOPE_API_KEY", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def start_process(
    args: Sequence[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own process group, output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as handle:
        process = subprocess.Popen(
            list(args),
            env=env,
            cwd=cwd or REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _CHILDREN.append(process)
    return process


def stop_process(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        kill_group(process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group: no shutdown code runs anywhere."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(10)


@contextmanager
def running(
    args: Sequence[str], env: dict[str, str], log_path: Path, grace: float = 15.0
) -> Iterator[subprocess.Popen[bytes]]:
    process = start_process(args, env, log_path)
    try:
        yield process
    finally:
        stop_process(process, grace)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process, 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(root: int) -> int:
    return sum(rss_bytes(pid) for pid in tree_pids(root))


# -- the emulator ----------------------------------------------------------------------


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    base_url: str
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))

    def stats(self) -> dict[str, Any]:
        response = self._client.get(f"{self.base_url}/_stats")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def close(self) -> None:
        self._client.close()


@contextmanager
def emulator(
    log_path: Path,
    rpm: int | None = None,
    tpm: int | None = None,
    latency_ms: tuple[float, float] = (0.0, 0.0),
    seed: int = 1,
) -> Iterator[Emulator]:
    """``qocr emulator`` (hash recognizer) as a subprocess on a free loopback port."""
    args = [*QOCR, "emulator", "--port", "0", "--recognizer", "hash", "--seed", str(seed)]
    if rpm:
        args += ["--rpm", str(rpm)]
    if tpm:
        args += ["--tpm", str(tpm)]
    args += ["--latency-ms", str(latency_ms[0]), str(latency_ms[1])]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(b"")
    process = start_process(args, child_env(), log_path)
    pattern = re.compile(r"listening on (http://\S+)")
    url: str | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and url is None:
        match = pattern.search(log_path.read_text(errors="replace"))
        if match:
            url = match.group(1)
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.1)
    if url is None:
        stop_process(process)
        raise RuntimeError(f"the emulator did not start: {log_path.read_text(errors='replace')}")
    handle = Emulator(process, url)
    try:
        yield handle
    finally:
        handle.close()
        stop_process(process, grace=5)


# -- a deployment ----------------------------------------------------------------------


@dataclass
class Deployment:
    """Database, broker, emulator and the environment of every qocr process."""

    workdir: Path
    database_url: str
    broker_url: str
    emulator: Emulator
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, **overrides: str) -> dict[str, str]:
        return child_env(
            DASHSCOPE_API_KEY=API_KEY,
            QOCR_DATABASE_URL=self.database_url,
            QOCR_BROKER_URL=self.broker_url,
            QOCR_BASE_URL=self.emulator.base_url,
            QOCR_MODEL=MODEL,
            **{**self.extra_env, **overrides},
        )

    def worker(
        self, name: str, pool: str = "threads", concurrency: int = 16, *args: str, **env: str
    ) -> subprocess.Popen[bytes]:
        command = [*QOCR, "worker", "--pool", pool, "-c", str(concurrency), *args]
        return start_process(command, self.env(**env), self.workdir / f"{name}.log")

    def submit(self, *sources: str, timeout: float = 600, **env: str) -> tuple[int, int, float]:
        """``qocr submit --json SOURCES``: (batch id, items, wall seconds)."""
        started = time.perf_counter()
        done = subprocess.run(
            [*QOCR, "submit", "--json", *sources],
            env=self.env(**env),
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"qocr submit failed: {done.stderr[-2000:]}")
        document = json.loads(done.stdout.strip().splitlines()[-1])
        return int(document["id"]), int(document["items"]), elapsed

    def sql(self, statement: str, **params: Any) -> list[Any]:
        engine = create_engine(_normalize(self.database_url))
        try:
            with engine.begin() as conn:
                return list(conn.execute(text(statement), params))
        finally:
            engine.dispose()

    def count_by_state(self, batch_id: int) -> dict[str, int]:
        rows = self.sql(
            "SELECT state, count(*) FROM items WHERE batch_id = :b GROUP BY state", b=batch_id
        )
        return {str(state): int(n) for state, n in rows}

    def logs_tail(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)


def _normalize(url: str) -> str:
    from qocr.models.db import normalize_url

    return normalize_url(url)


class SqlProbe:
    """One pooled engine for the many small polling queries of a benchmark."""

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(_normalize(database_url), pool_size=2)

    def rows(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            return list(conn.execute(text(statement), params))

    def scalar(self, statement: str, **params: Any) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(text(statement), params).scalar()

    def close(self) -> None:
        self.engine.dispose()


# -- images ----------------------------------------------------------------------------


def base_png(size: tuple[int, int]) -> bytes:
    """A white page with lines of black text, ``size`` pixels."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row in range(10, size[1] - 20, 40):
        draw.text((20, row), f"qocr benchmark page, line {row // 40:03d}", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def with_text_chunk(png: bytes, payload: str) -> bytes:
    """``png`` with a tEXt chunk before IEND: same pixels, different bytes (and sha256)."""
    body = b"qocr\x00" + payload.encode("ascii")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body) & 0xFFFFFFFF)
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + chunk + png[iend:]


def image_folder(count: int, size: tuple[int, int], root: Path | None = None) -> Path:
    """A folder of ``count`` distinct PNGs of ``size``; kept under bench/out and reused."""
    root = root or OUT / "images"
    folder = root / f"{size[0]}x{size[1]}-{count}"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    page = base_png(size)
    for index in range(count):
        (folder / f"page-{index:07d}.png").write_bytes(with_text_chunk(page, f"{index:07d}"))
    marker.write_text(str(count))
    return folder


def run_dir(name: str) -> Path:
    """A fresh folder for one benchmark's logs and files."""
    path = OUT / "runs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path
