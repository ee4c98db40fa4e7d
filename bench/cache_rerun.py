"""Cache re-run: N images already read, submitted again under new names, make no call.

    python bench/cache_rerun.py [--quick] [--items N] [-c 16] [--redis-db 10]

One run, one fresh PostgreSQL database, the emulator unlimited and instant, one
``qocr worker --pool threads -c C`` started before the submits (as in production):

1. **paid**: ``qocr submit`` of N distinct small PNGs (320x120); every item is a call.
2. **re-run**: the same N files hard-linked under new names in another folder (same bytes,
   other paths), submitted again; every item should come from the result cache.

For each batch: wall seconds from the submit's return to the last item finished, items/s
over that and over the middle 80 % of completion times, the emulator's requests during the
batch, PostgreSQL transactions and rows per item, and for the re-run what
``qocr status --json`` says (``cached``, ``saved``). Target (issue 14): the re-run makes 0
calls and completes; how long it takes shows whether it is bounded by SQL, not the provider.
Defaults: 10,000 items; ``--quick``: 1,000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import benchlib as bl

SMALL_PAGE = (320, 120)
RPM_OUT_OF_REACH = "1000000"
MIDDLE = (0.1, 0.9)
LOCK_KEY = "qocr:dispatcher:lock"  # scheduler.dispatch.LOCK_KEY


def renamed_folder(source: Path, count: int) -> Path:
    """The images of ``source`` under other names (hard links: same bytes, no copy)."""
    folder = source.parent / f"{source.name}-renamed"
    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for path in sorted(source.glob("*.png")):
        target = folder / f"again-{path.name}"
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    marker.write_text(str(count))
    return folder


def pg_counters(probe: bl.SqlProbe) -> dict[str, int]:
    row = probe.rows(
        "SELECT xact_commit, tup_returned, tup_fetched, tup_inserted, tup_updated "
        "FROM pg_stat_database WHERE datname = current_database()"
    )[0]
    names = ("xact_commit", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated")
    return dict(zip(names, (int(v) for v in row), strict=True))


def middle_rate(times: list[float]) -> float:
    """Items per second over the middle 80 % of completion times."""
    times = sorted(times)
    if len(times) < 10:
        return 0.0
    low, high = int(len(times) * MIDDLE[0]), int(len(times) * MIDDLE[1]) - 1
    span = times[high] - times[low]
    return (high - low) / span if span > 0 else 0.0


def run_batch(
    deployment: bl.Deployment, probe: bl.SqlProbe, folder: Path, label: str, timeout: float
) -> dict[str, Any]:
    """Submit ``folder``, wait for the batch to end; its figures."""
    requests_before = int(deployment.emulator.stats()["requests"])
    pg_before = pg_counters(probe)
    batch_id, count, submit_s = deployment.submit(str(folder))
    started = time.time()
    bl.log(f"{label}: batch {batch_id}, {count} items submitted in {submit_s:.1f} s")
    finished = bl.wait_until(
        lambda: probe.scalar("SELECT state FROM batches WHERE id = :b", b=batch_id) != "running",
        timeout=timeout,
        interval=0.25,
    )
    wall = time.time() - started
    last = probe.scalar(
        "SELECT extract(epoch FROM max(finished_at)) FROM items WHERE batch_id = :b", b=batch_id
    )
    to_last = float(last) - started if last is not None else wall
    times = [
        float(t)
        for (t,) in probe.rows(
            "SELECT extract(epoch FROM finished_at) FROM items "
            "WHERE batch_id = :b AND finished_at IS NOT NULL",
            b=batch_id,
        )
    ]
    pg_delta = bl.counter_delta(pg_before, pg_counters(probe))
    requests = int(deployment.emulator.stats()["requests"]) - requests_before
    bl.log(f"{label}: {'done' if finished else 'NOT done'} in {to_last:.1f} s, {requests} calls")
    return {
        "batch_id": batch_id,
        "items": count,
        "finished": finished,
        "states": deployment.count_by_state(batch_id),
        "submit_s": round(submit_s, 2),
        "wall_s_submit_to_last_item": round(to_last, 2),
        "items_per_second": round(count / to_last, 1) if to_last > 0 else None,
        "items_per_second_middle_80": round(middle_rate(times), 1),
        "provider_requests": requests,
        "pg_per_item": {k: round(v / count, 2) for k, v in pg_delta.items()},
    }


def status_document(deployment: bl.Deployment, batch_id: int) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [*bl.QOCR, "status", str(batch_id), "--json"],
        env=deployment.env(),
        cwd=deployment.workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"qocr status failed: {done.stderr[-2000:]}")
    document: dict[str, Any] = json.loads(done.stdout)
    document["_wall_s"] = round(time.perf_counter() - started, 3)
    return document


def fleet_ready(broker_url: str, timeout: float = 90) -> bool:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        return bl.wait_until(lambda: client.exists(LOCK_KEY) == 1, timeout, 0.2)
    finally:
        client.close()


def main() -> None:
    parser = bl.base_parser(__doc__ or "")
    parser.add_argument("--items", type=int, help="Images (default 10,000; --quick 1,000).")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="Worker threads.")
    parser.add_argument("--redis-db", type=int, default=bl.REDIS_DB_PIPELINE)
    args = parser.parse_args()
    items = args.items or (1_000 if args.quick else 10_000)
    info = bl.machine_info()
    bl.print_machine(info)
    workdir = bl.run_dir("cache-rerun")
    folder = bl.image_folder(items, SMALL_PAGE)
    again = renamed_folder(folder, items)
    timeout = 300 + items / 5
    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(args.redis_db) as broker_url,
        bl.emulator(workdir / "emulator.log") as emu,
    ):
        deployment = bl.Deployment(
            workdir, database_url, broker_url, emu, extra_env={"QOCR_RPM": RPM_OUT_OF_REACH}
        )
        probe = bl.SqlProbe(database_url)
        worker = deployment.worker("worker", "threads", args.concurrency)
        try:
            if not fleet_ready(broker_url):
                raise RuntimeError("the worker did not start\n" + deployment.logs_tail())
            paid = run_batch(deployment, probe, folder, "paid", timeout)
            rerun = run_batch(deployment, probe, again, "re-run", timeout)
            status = status_document(deployment, rerun["batch_id"])
        finally:
            bl.stop_process(worker, grace=20)
            probe.close()
    rerun["status"] = {
        "cached": status["cached"],
        "saved": status["saved"],
        "usage": status["usage"],
        "counts": status["counts"],
        "qocr_status_wall_s": status["_wall_s"],
    }
    document = {
        "benchmark": "cache_rerun",
        "machine": info,
        "items": items,
        "worker": f"--pool threads -c {args.concurrency}",
        "paid": paid,
        "rerun": rerun,
        "rerun_zero_calls": rerun["provider_requests"] == 0,
        "rerun_all_cached": status["cached"] == items,
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
