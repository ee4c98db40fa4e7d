"""Submit ÷ COPY: ``qocr submit @manifest`` beside a plain psycopg COPY of the same lines.

One run, one fresh PostgreSQL database (migrated to head), in this order:

1. ``--rounds`` times (default 3), in turn:
   a. COPY (the baseline): psycopg reads the manifest line by line and COPYs
      ``(batch_id, source)`` into a table with a UNIQUE ``(batch_id, source)`` index;
   b. ``qocr submit --json @manifest`` as a child process, into an emptied ``items``: its
      wall time (interpreter start, sources read and checked, the batch and its items
      written, the one-shot publish of the dispatch window to Redis; no worker runs) and its
      peak RSS (``ru_maxrss`` from wait4).
2. COPY once more. Each submit is divided by the mean of the COPYs just before and after it
   (the machine is shared); the figure is the median of those ratios.
3. Where the time goes (skip with ``--no-profile``): the same manifest through
   ``Store.create_batch`` in this process (whether it ran the dedupe statement: with no line
   listed twice it should not); that statement alone over the batch just written (what a
   repeated line costs; ``auto_explain`` reports its plan); the sources read, checked and
   digested alone, without a database; the one-shot publish of the dispatch window alone
   (``publish_now``, the new batch's items undispatched first); and ``qocr submit --help``
   (the CLI's start-up).

Every timed step starts after a CHECKPOINT. Targets (issue 20): submit ≤ 3 × COPY, peak
RSS ≤ 200 MB. Defaults: 1,000,000 lines; ``--quick``: 100,000.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import benchlib as bl
import psycopg

URL = "http://docs.example.com/bench/scan-{:07d}-tps-320-120.png"
BASELINE_TABLE = "copy_baseline"
TARGET_RATIO = 3.0
TARGET_RSS_BYTES = 200_000_000
# auto_explain on the profiling connection: plans of every statement, with actual times,
# trigger times and WAL, sent to the client as notices (COPY has no plan: it is timed).
AUTO_EXPLAIN = {
    "log_min_duration": "0",
    "log_analyze": "on",
    "log_triggers": "on",
    "log_wal": "on",
    "log_timing": "on",
    "log_level": "notice",
}


def manifest_of(lines: int) -> Path:
    """A manifest of ``lines`` http URLs, one a line; written once and reused."""
    path = bl.OUT / f"manifest-{lines}.txt"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    with partial.open("w") as handle:
        for start in range(0, lines, 10_000):
            stop = min(lines, start + 10_000)
            handle.write("".join(URL.format(i) + "\n" for i in range(start, stop)))
    partial.rename(path)
    return path


def driver_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def checkpoint(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def copy_baseline(dsn: str, manifest: Path) -> tuple[float, int]:
    """Seconds to COPY the manifest's lines into the baseline table; and the rows."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {BASELINE_TABLE}"
            " (batch_id integer NOT NULL, source text NOT NULL, UNIQUE (batch_id, source))"
        )
        conn.execute(f"TRUNCATE {BASELINE_TABLE}")
        conn.commit()
    checkpoint(dsn)
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy(f"COPY {BASELINE_TABLE} (batch_id, source) FROM STDIN") as copy,
            manifest.open(encoding="utf-8") as handle,
        ):
            for line in handle:
                copy.write_row((1, line.rstrip("\n")))
        conn.commit()
        elapsed = time.perf_counter() - started
        row = conn.execute(f"SELECT count(*) FROM {BASELINE_TABLE}").fetchone()
    return elapsed, int(row[0]) if row else 0


def empty_items(dsn: str) -> None:
    """No items before a submit: each round writes into the same empty table."""
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE items, batches RESTART IDENTITY CASCADE")
        conn.commit()


def run_submit(env: dict[str, str], manifest: Path, log_path: Path) -> dict[str, Any]:
    """``qocr submit --json @manifest``: wall seconds, peak RSS, batch id and item count."""
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            [*bl.QOCR, "submit", "--json", f"@{manifest}"],
            env=env,
            cwd=bl.REPO,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"qocr submit failed: {log_path.read_text(errors='replace')[-2000:]}")
    document = json.loads(output.decode().strip().splitlines()[-1])
    return {
        "seconds": elapsed,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "user_cpu_s": usage.ru_utime,
        "system_cpu_s": usage.ru_stime,
        "batch_id": int(document["id"]),
        "items": int(document["items"]),
    }


def profile_create_batch(database_url: str, broker_url: str, manifest: Path) -> dict[str, Any]:
    """The manifest through ``Store.create_batch`` here, its COPY and dedupe timed apart."""
    from sqlalchemy import event

    from qocr.models.db import make_engine
    from qocr.models.entities import source_digest
    from qocr.models.new_items import DEDUPE_WORK_MEM, delete_duplicates
    from qocr.models.records import BatchSpec
    from qocr.models.store import Store
    from qocr.scheduler.sources import SourceExpander

    def no_s3() -> Any:
        raise AssertionError("the manifest holds http URLs only")

    started = time.perf_counter()
    sources = 0
    for row in SourceExpander(no_s3).expand([f"@{manifest}"]):
        source_digest(row.source)
        sources += 1
    expand_s = time.perf_counter() - started

    notices: list[str] = []
    engine = make_engine(database_url, pool_size=1, max_overflow=0)

    @event.listens_for(engine, "connect")
    def explain_slow_statements(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        with dbapi_connection.cursor() as cursor:
            cursor.execute("LOAD 'auto_explain'")
            for name, value in AUTO_EXPLAIN.items():
                cursor.execute(f"SET auto_explain.{name} = '{value}'")
        dbapi_connection.commit()

    # Whether create_batch searched the batch for repeats (it should not: no line repeats).
    deletes: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def before(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("DELETE FROM items"):
            deletes.append(statement)

    store = Store(engine)
    spec = BatchSpec(name="profile", api="compatible", model=bl.MODEL, options={})
    checkpoint(driver_dsn(database_url))
    started = time.perf_counter()
    batch_id, items = store.create_batch(spec, SourceExpander(no_s3).expand([f"@{manifest}"]))
    create_s = time.perf_counter() - started
    dedupe_in_submit = bool(deletes)
    # What the repeat watch saves: the dedupe statement alone, over the batch just written
    # (a manifest with a repeated line, or past the watched sources, pays it).
    checkpoint(driver_dsn(database_url))
    with engine.begin() as conn:
        conn.execute(DEDUPE_WORK_MEM)
        started = time.perf_counter()
        deleted = delete_duplicates(conn, batch_id)
        dedupe_s = time.perf_counter() - started
    assert deleted == 0, deleted
    publish = profile_publish(database_url, broker_url, store, batch_id)
    engine.dispose()
    plan = next((n for n in notices if "DELETE FROM items" in n), "")
    wal = re.search(r"WAL: records=(\d+)(?: fpi=(\d+))? bytes=(\d+)", plan)
    return {
        "sources_read_checked_digested_s": round(expand_s, 2),
        "sources": sources,
        "create_batch_s": round(create_s, 2),
        "items": items,
        "dedupe_in_create_batch": dedupe_in_submit,
        "dedupe_delete_alone_s": round(dedupe_s, 2),
        "dedupe_delete_explained_ms": _number(r"duration: ([\d.]+) ms", plan),
        "dedupe_wal": {
            "records": int(wal.group(1)),
            "full_page_images": int(wal.group(2) or 0),
            "mib": mib(int(wal.group(3))),
        }
        if wal
        else None,
        "dedupe_plan": plan,
        **publish,
        "cli_start_s": round(cli_start_seconds(), 2),
    }


def profile_publish(
    database_url: str, broker_url: str, store: Any, batch_id: int
) -> dict[str, Any]:
    """The one-shot publish ``qocr submit`` ends with, alone: the window of a new batch."""
    import redis

    from qocr.settings import Settings
    from qocr.worker.app import create_app
    from qocr.worker.publish import publish_now

    redis.Redis.from_url(broker_url).flushdb()
    store.reset_dispatched()  # the submit's window, published by step 2, is not in flight
    settings = Settings(
        database_url=database_url,
        broker_url=broker_url,
        model=bl.MODEL,
        DASHSCOPE_API_KEY=bl.API_KEY,
    )
    started = time.perf_counter()
    app = create_app(settings)
    try:
        published = publish_now(app, settings, store)
    finally:
        app.close()
    publish_s = time.perf_counter() - started
    redis.Redis.from_url(broker_url).flushdb()
    return {"publish_s": round(publish_s, 2), "published_messages": published}


def cli_start_seconds() -> float:
    """Wall time of ``qocr submit --help``: the interpreter, the CLI and its imports."""
    started = time.perf_counter()
    subprocess.run([*bl.QOCR, "submit", "--help"], cwd=bl.REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text)
    return float(match.group(1)) if match else None


def mib(value: float) -> float:
    return round(value / 1024 / 1024, 1)


def main() -> None:
    parser = bl.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, help="Manifest lines (default 1,000,000).")
    parser.add_argument(
        "--redis-db",
        type=int,
        default=bl.REDIS_DB_PIPELINE,
        help="Redis database for the submit's one-shot publish (flushed before and after).",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="COPY + submit rounds (default 3; the median)."
    )
    parser.add_argument("--no-profile", action="store_true", help="Skip step 4.")
    args = parser.parse_args()
    lines = args.lines or (100_000 if args.quick else 1_000_000)
    machine = bl.machine_info()
    bl.print_machine(machine)
    workdir = bl.run_dir("submit_copy")
    manifest = manifest_of(lines)
    bl.log(f"manifest: {lines} lines, {mib(manifest.stat().st_size)} MiB ({manifest})")

    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(args.redis_db) as broker_url,
    ):
        dsn = driver_dsn(database_url)
        env = bl.child_env(
            DASHSCOPE_API_KEY=bl.API_KEY,
            QOCR_DATABASE_URL=database_url,
            QOCR_BROKER_URL=broker_url,
            QOCR_MODEL=bl.MODEL,
        )
        copies: list[float] = []
        submits: list[dict[str, Any]] = []
        for round_number in range(1, args.rounds + 1):
            copy_s, copied = copy_baseline(dsn, manifest)
            copies.append(copy_s)
            bl.log(f"round {round_number}: COPY {copied} rows in {copy_s:.2f} s")
            empty_items(dsn)
            checkpoint(dsn)
            submit = run_submit(env, manifest, workdir / f"submit-{round_number}.log")
            submits.append(submit)
            bl.log(f"round {round_number}: submit {submit['items']} in {submit['seconds']:.2f} s")
        copy_s, _ = copy_baseline(dsn, manifest)
        copies.append(copy_s)
        bl.log(f"COPY again: {copy_s:.2f} s")
        empty_items(dsn)
        profile = (
            None if args.no_profile else profile_create_batch(database_url, broker_url, manifest)
        )
        if profile:
            bl.log(f"profile: {profile['create_batch_s']} s in create_batch")

    # Each submit against the mean of the COPYs just before and after it.
    ratios = [
        submit["seconds"] / ((copies[i] + copies[i + 1]) / 2) for i, submit in enumerate(submits)
    ]
    ratio = statistics.median_low(ratios)  # a measured round's ratio, also for even rounds
    middle = submits[ratios.index(ratio)]
    peak_rss = max(submit["peak_rss_bytes"] for submit in submits)
    document: dict[str, Any] = {
        "bench": "submit_copy",
        "quick": args.quick,
        "machine": machine,
        "config": {
            "lines": lines,
            "manifest_mib": mib(manifest.stat().st_size),
            "command": f"qocr submit --json @{manifest.name}",
            "baseline": f"psycopg COPY (batch_id, source) FROM STDIN, UNIQUE (batch_id, source)"
            f", {BASELINE_TABLE}",
        },
        "copy_runs_s": [round(value, 2) for value in copies],
        "copy_median_s": round(statistics.median(copies), 2),
        "submit_runs_s": [round(submit["seconds"], 2) for submit in submits],
        "submit_median_s": round(statistics.median(s["seconds"] for s in submits), 2),
        "submit_items": middle["items"],
        "submit_cpu_s": {
            "user": round(middle["user_cpu_s"], 2),
            "system": round(middle["system_cpu_s"], 2),
        },
        "ratio_runs": [round(value, 2) for value in ratios],
        "ratio_submit_to_copy": round(ratio, 2),
        "submit_peak_rss_mib": mib(peak_rss),
        "profile": profile,
        "targets": {
            "ratio_le_3": ratio <= TARGET_RATIO,
            "peak_rss_le_200mb": peak_rss <= TARGET_RSS_BYTES,
        },
        "workdir": str(workdir),
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
