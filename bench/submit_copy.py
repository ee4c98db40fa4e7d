"""Submit ÷ COPY: ``qocr submit @manifest`` beside a plain psycopg COPY of the same lines.

One run, one fresh PostgreSQL database (migrated to head), in this order:

1. COPY (the baseline): psycopg reads the manifest line by line and COPYs
   ``(batch_id, source)`` into a table with a UNIQUE ``(batch_id, source)`` index.
2. ``qocr submit --json @manifest`` as a child process: its wall time (interpreter start,
   sources read and checked, the batch and its items written, the one-shot publish of the
   dispatch window to Redis; no worker runs) and its peak RSS (``ru_maxrss`` from wait4).
3. COPY again (the machine is shared: the baseline is the mean of the two).
4. Where the time goes (skip with ``--no-profile``): the same manifest through
   ``Store.create_batch`` in this process, with ``auto_explain`` on its INSERT (whose
   duration and foreign-key trigger time it reports), and the sources read, checked and
   digested alone, without a database.

Every timed step starts after a CHECKPOINT. Targets (issue 20): submit ≤ 3 × COPY, peak
RSS ≤ 200 MB. Defaults: 1,000,000 lines; ``--quick``: 100,000.
"""

from __future__ import annotations

import json
import os
import re
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
# auto_explain on the profiling connection: plans of statements over half a second, with
# actual times, trigger times and WAL, sent to the client as notices.
AUTO_EXPLAIN = {
    "log_min_duration": "500",
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


def profile_create_batch(database_url: str, manifest: Path) -> dict[str, Any]:
    """The manifest through ``Store.create_batch`` here, its INSERT under auto_explain."""
    from sqlalchemy import event

    from qocr.models.db import make_engine
    from qocr.models.entities import source_digest
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

    store = Store(engine)
    spec = BatchSpec(name="profile", api="compatible", model=bl.MODEL, options={})
    checkpoint(driver_dsn(database_url))
    started = time.perf_counter()
    _, items = store.create_batch(spec, SourceExpander(no_s3).expand([f"@{manifest}"]))
    create_s = time.perf_counter() - started
    engine.dispose()
    plan = next((n for n in notices if "INSERT INTO items" in n), "")
    insert_ms = _number(r"duration: ([\d.]+) ms", plan)
    trigger_ms = _number(r"Trigger for constraint fk_items_batch_id_batches: time=([\d.]+)", plan)
    wal = re.search(r"WAL: records=(\d+)(?: fpi=(\d+))? bytes=(\d+)", plan)
    insert_s = (insert_ms or 0) / 1000
    return {
        "sources_read_checked_digested_s": round(expand_s, 2),
        "sources": sources,
        "create_batch_s": round(create_s, 2),
        "items": items,
        "stream_into_staging_s": round(create_s - insert_s, 2),
        "insert_select_s": round(insert_s, 2),
        "fk_trigger_s": round(trigger_ms / 1000, 2) if trigger_ms is not None else None,
        "insert_wal": {
            "records": int(wal.group(1)),
            "full_page_images": int(wal.group(2) or 0),
            "mib": mib(int(wal.group(3))),
        }
        if wal
        else None,
        "insert_plan": plan,
    }


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
        copy_before_s, copied = copy_baseline(dsn, manifest)
        bl.log(f"COPY: {copied} rows in {copy_before_s:.2f} s")
        env = bl.child_env(
            DASHSCOPE_API_KEY=bl.API_KEY,
            QOCR_DATABASE_URL=database_url,
            QOCR_BROKER_URL=broker_url,
            QOCR_MODEL=bl.MODEL,
        )
        checkpoint(dsn)
        submit = run_submit(env, manifest, workdir / "submit.log")
        bl.log(f"submit: {submit['items']} items in {submit['seconds']:.2f} s")
        copy_after_s, _ = copy_baseline(dsn, manifest)
        bl.log(f"COPY again: {copy_after_s:.2f} s")
        profile = None if args.no_profile else profile_create_batch(database_url, manifest)
        if profile:
            bl.log(f"profile: {profile['create_batch_s']} s in create_batch")

    copy_s = (copy_before_s + copy_after_s) / 2
    ratio = submit["seconds"] / copy_s
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
        "copy_s": round(copy_s, 2),
        "copy_runs_s": [round(copy_before_s, 2), round(copy_after_s, 2)],
        "copy_rows": copied,
        "submit_s": round(submit["seconds"], 2),
        "submit_items": submit["items"],
        "submit_cpu_s": {
            "user": round(submit["user_cpu_s"], 2),
            "system": round(submit["system_cpu_s"], 2),
        },
        "ratio_submit_to_copy": round(ratio, 2),
        "submit_peak_rss_mib": mib(submit["peak_rss_bytes"]),
        "profile": profile,
        "targets": {
            "ratio_le_3": ratio <= TARGET_RATIO,
            "peak_rss_le_200mb": submit["peak_rss_bytes"] <= TARGET_RSS_BYTES,
        },
        "workdir": str(workdir),
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
