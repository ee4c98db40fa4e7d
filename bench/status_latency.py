"""How fast `qocr status BATCH --json` answers on a million-item batch in PostgreSQL.

    python bench/status_latency.py [--items N] [--text-bytes B] [--runs R]

Builds a throwaway database (``qocr_bench_status``, dropped at the end unless ``--keep``)
with the real schema (Alembic head), an older completed batch of N/5 items and the measured
running batch of N items: 95 % finished over the last hour (mostly succeeded, 4 % failed
with two codes, 0.5 % cancelled), the rest queued or running, one result per succeeded item
with a B-byte text. Everything is inserted with ``INSERT ... SELECT generate_series``, then
``VACUUM ANALYZE`` (what autovacuum does after a bulk load).

Figures printed:
- cold: `qocr status BATCH --json` in a new process against a byte-for-byte copy of the
  database (``CREATE DATABASE ... STRATEGY FILE_COPY``) whose files were just evicted from the
  OS page cache (``posix_fadvise DONTNEED``) and which PostgreSQL has never read into its
  shared buffers: every page comes from disk;
- warm: the same command again, R times (median, min, max);
- the queries alone, in-process (no interpreter start-up), warm;
- the start-up floor: `python -c "import qocr.cli.status"` plus settings and engine set-up.

The batch tallies (``models/tallies.py``) are filled from the rows the way the pipeline's
transitions fill them. Needs PostgreSQL superuser access (trust auth on 127.0.0.1 by
default, as the tests use) and read access to the data directory for the cold figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qocr.migrations import migrate  # noqa: E402
from qocr.models.db import make_engine  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_NAME = "qocr_bench_status"
COLD_NAME = DB_NAME + "_cold"


def url_of(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + database


def create_database(admin: Engine, name: str, template: str | None = None) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if template is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            conn.execute(
                text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY = FILE_COPY')
            )


def drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def populate(engine: Engine, items: int, text_bytes: int) -> int:
    """An older completed batch of items/5, then the running batch measured; returns its id."""
    old = max(items // 5, 1)
    with engine.begin() as conn:
        older = _batch(conn, "older, completed", "completed", old)
        _items(conn, older, old, finished_share=1.0)
        _results(conn, older, text_bytes)
        _tallies(conn, older)
        measured = _batch(conn, "bench, running", "running", items)
        _items(conn, measured, items, finished_share=0.95)
        _results(conn, measured, text_bytes)
        _tallies(conn, measured)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return measured


def _batch(conn: Any, name: str, state: str, total: int) -> int:
    batch_id = conn.scalar(
        text(
            "INSERT INTO batches (name, api, model, options, source_options, state, total_items,"
            " created_at, updated_at, finished_at)"
            " VALUES (:name, 'compatible', 'qwen-vl-ocr-latest', '{}', '{}', :state, :total,"
            " now() - interval '1 hour', now() - interval '1 hour',"
            " CASE WHEN CAST(:finished AS boolean) THEN now() END) RETURNING id"
        ),
        {"name": name, "state": state, "total": total, "finished": state != "running"},
    )
    return int(batch_id)


def _items(conn: Any, batch_id: int, count: int, finished_share: float) -> None:
    # The first finished_share of the ids are finished (spread over the last hour, newest
    # last), the rest queued, one in fifty of those running.
    conn.execute(
        text(
            """
            INSERT INTO items (batch_id, source, source_sha256, state, attempts, last_error_code,
                               last_error_message, created_at, updated_at, finished_at)
            SELECT :batch, src.source, encode(sha256(convert_to(src.source, 'UTF8')), 'hex'),
                   s.state,
                   CASE WHEN s.state IN ('queued', 'running') THEN 0 ELSE 1 END,
                   s.code,
                   CASE WHEN s.code IS NOT NULL THEN 'bench: ' || s.code END,
                   now() - interval '1 hour', now(),
                   CASE WHEN s.state NOT IN ('queued', 'running')
                        THEN now() - make_interval(secs => (:done - i) * 3600.0 / :done) END
            FROM generate_series(1, :count) AS i
            CROSS JOIN LATERAL (
                SELECT 's3://bench/' || :batch || '/doc-' || lpad(i::text, 8, '0') || '.png'
                       AS source
            ) AS src
            CROSS JOIN LATERAL (
                SELECT CASE
                         WHEN i > :done AND i % 50 = 0 THEN 'running'
                         WHEN i > :done THEN 'queued'
                         WHEN i % 50 = 0 THEN 'failed'
                         WHEN i % 50 = 1 THEN 'failed'
                         WHEN i % 200 = 2 THEN 'cancelled'
                         ELSE 'succeeded' END AS state,
                       CASE
                         WHEN i > :done THEN NULL
                         WHEN i % 50 = 0 THEN 'image_empty'
                         WHEN i % 50 = 1 THEN 'InvalidParameter'
                         WHEN i % 200 = 2 THEN 'cancelled' END AS code
            ) AS s
            """
        ),
        {"batch": batch_id, "count": count, "done": max(int(count * finished_share), 1)},
    )


def _results(conn: Any, batch_id: int, text_bytes: int) -> None:
    conn.execute(
        text(
            """
            INSERT INTO results (item_id, text, kv_result, finish_reason, request_id, model,
                                 input_tokens, output_tokens, image_tokens, total_tokens,
                                 latency_ms, created_at)
            SELECT id,
                   left(repeat('Invoice ' || id || ' line: qty 1 x item, USD 12.50. ', 80),
                        :text_bytes),
                   jsonb_build_object('invoice_number', id::text,
                                      'seller', jsonb_build_object('name', 'ACME ' || id % 97)),
                   CASE WHEN id % 1000 = 7 THEN 'length' ELSE 'stop' END,
                   md5(id::text), 'qwen-vl-ocr-latest',
                   700 + id % 50, 80 + id % 40, 450, 780 + id % 50 + id % 40,
                   900 + id % 300, finished_at
            FROM items WHERE batch_id = :batch AND state = 'succeeded'
            """
        ),
        {"batch": batch_id, "text_bytes": text_bytes},
    )


# What the store's terminal transitions add up to (models/tallies.py), spread over shards.
TALLIES = (
    """SELECT batch_id, 'state', state, id % 8, 1 FROM items
       WHERE batch_id = :batch AND state IN ('succeeded', 'failed', 'cancelled')""",
    """SELECT batch_id, 'error', coalesce(last_error_code, ''), id % 8, 1 FROM items
       WHERE batch_id = :batch AND state IN ('failed', 'cancelled')""",
    """SELECT i.batch_id, 'finish', coalesce(r.finish_reason, ''), i.id % 8, 1
       FROM results r JOIN items i ON i.id = r.item_id WHERE i.batch_id = :batch""",
    *(
        f"""SELECT i.batch_id, '{kind}', r.model, i.id % 8, r.{column}
            FROM results r JOIN items i ON i.id = r.item_id WHERE i.batch_id = :batch"""
        for kind, column in (
            ("input", "input_tokens"),
            ("output", "output_tokens"),
            ("image", "image_tokens"),
            ("total", "total_tokens"),
        )
    ),
)


def _tallies(conn: Any, batch_id: int) -> None:
    for rows in TALLIES:
        conn.execute(
            text(
                "INSERT INTO batch_tallies (batch_id, kind, key, shard, value)"
                f" SELECT b, k, key, s, sum(v) FROM ({rows}) AS t(b, k, key, s, v)"
                " GROUP BY b, k, key, s"
            ),
            {"batch": batch_id},
        )


def evict_from_page_cache(admin: Engine, database: str) -> int:
    """Drop the database's files from the OS page cache; returns the bytes advised."""
    with admin.connect() as conn:
        data_dir = conn.scalar(text("SHOW data_directory"))
        oid = conn.scalar(text("SELECT oid FROM pg_database WHERE datname = :n"), {"n": database})
    folder = Path(str(data_dir)) / "base" / str(oid)
    advised = 0
    for path in folder.iterdir():
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            advised += size
        finally:
            os.close(fd)
    return advised


def cli_seconds(database_url: str, batch_id: int) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOCR_")}
    env["QOCR_DATABASE_URL"] = database_url
    start = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "qocr", "status", str(batch_id), "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"qocr status failed: {completed.stderr.strip()}")
    return elapsed, json.loads(completed.stdout)


def startup_floor(database_url: str) -> float:
    """Start-up of the same command minus its queries: imports, settings, a connection."""
    code = (
        "from qocr.cli import cli, status; from qocr.settings import get_settings;"
        "from qocr.models.db import make_engine; from sqlalchemy import text;"
        "e = make_engine(get_settings().database_url); c = e.connect();"
        "c.execute(text('SELECT 1')); c.close(); e.dispose()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOCR_")}
    env["QOCR_DATABASE_URL"] = database_url
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
    return time.perf_counter() - start


def query_seconds(database_url: str, batch_id: int, runs: int) -> dict[str, float]:
    """The reporting queries alone, warm, in this process (median of ``runs``)."""
    from qocr.models.base import utcnow
    from qocr.models.reports import Reports

    engine = make_engine(database_url)
    reports = Reports(engine)
    timings: dict[str, list[float]] = {"summary": [], "finished_since": [], "list": [], "page": []}
    for _ in range(runs):
        for name, call in (
            ("summary", lambda: reports.summary(batch_id)),
            ("finished_since", lambda: reports.finished_since(batch_id, utcnow())),
            ("list", lambda: reports.recent_batches(20)),
        ):
            start = time.perf_counter()
            call()
            timings[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        # The first export page (keyset by item id, 1,000 rows, after the older batch's ids).
        next(iter(reports.iter_items(batch_id)))
        timings["page"].append(time.perf_counter() - start)
    engine.dispose()
    return {name: statistics.median(values) for name, values in timings.items()}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    system = f"{platform.platform()}, Python {platform.python_version()}"
    return f"{cpu}, {os.cpu_count()} CPUs{memory}, {system}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--text-bytes", type=int, default=1_500, help="OCR text per result")
    parser.add_argument("--runs", type=int, default=5, help="warm runs")
    parser.add_argument(
        "--admin-url", default=os.environ.get("QOCR_BENCH_PG_ADMIN_URL", DEFAULT_ADMIN_URL)
    )
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database")
    args = parser.parse_args()

    admin = create_engine(args.admin_url, isolation_level="AUTOCOMMIT")
    url = url_of(args.admin_url, DB_NAME)
    cold_url = url_of(args.admin_url, COLD_NAME)
    try:
        engine = make_engine(url)
        if args.reuse:
            with engine.connect() as conn:
                batch_id = int(conn.scalar(text("SELECT max(id) FROM batches")) or 0)
        else:
            create_database(admin, DB_NAME)
            migrate.upgrade(engine)
            start = time.perf_counter()
            batch_id = populate(engine, args.items, args.text_bytes)
            print(f"built {args.items:,} items in {time.perf_counter() - start:.1f} s")
        with engine.connect() as conn:
            sizes = conn.execute(
                text(
                    "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class"
                    " WHERE relname IN ('items', 'results') ORDER BY relname"
                )
            ).all()
            version = conn.scalar(text("SHOW server_version"))
            shared = conn.scalar(text("SHOW shared_buffers"))
        engine.dispose()

        create_database(admin, COLD_NAME, template=DB_NAME)
        try:
            evicted = evict_from_page_cache(admin, COLD_NAME)
            cold_note = f"{evicted / 2**20:,.0f} MiB evicted from the page cache"
        except OSError as exc:
            cold_note = f"page cache NOT evicted ({exc.strerror}): an upper bound on warm only"
        cold, document = cli_seconds(cold_url, batch_id)
        warm = [cli_seconds(url, batch_id)[0] for _ in range(args.runs + 1)][1:]
        floor = statistics.median(startup_floor(url) for _ in range(3))
        queries = query_seconds(url, batch_id, args.runs)

        print(f"machine: {machine()}")
        print(
            f"PostgreSQL {version}, shared_buffers {shared}; table sizes: "
            + ", ".join(f"{name} {size}" for name, size in sizes)
        )
        print(f"batch {batch_id}: {document['total']:,} items, counts {document['counts']}")
        print(f"command: {sys.executable} -m qocr status {batch_id} --json")
        print(f"cold  {cold * 1000:8.0f} ms   (fresh copy of the database, {cold_note})")
        print(
            f"warm  {statistics.median(warm) * 1000:8.0f} ms   "
            f"(median of {len(warm)}, min {min(warm) * 1000:.0f}, max {max(warm) * 1000:.0f})"
        )
        print(
            f"start-up floor (interpreter, imports, settings, a connection): {floor * 1000:.0f} ms"
        )
        print(
            "queries alone, warm, median: "
            + ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in queries.items())
        )
    finally:
        if not args.keep:
            drop_database(admin, COLD_NAME)
            drop_database(admin, DB_NAME)
        else:
            drop_database(admin, COLD_NAME)
        admin.dispose()


if __name__ == "__main__":
    main()
