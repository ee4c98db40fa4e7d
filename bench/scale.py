"""Scale: a million-item submit, Redis memory, database size, worker RSS over 100k items.

    python bench/scale.py [--quick] [--items N] [--drain M] [--json-out F]

1. One ``qocr worker --pool threads -c 16`` is started first (a running fleet; ``QOCR_RPM``
   and ``QOCR_TPM`` out of reach, so the dispatch window is its maximum, 5,000 messages,
   and the throttle never waits), against the emulator (no limit, no latency).
2. ``qocr submit @manifest.txt`` of N http URLs (``http://docs.example.com/...-tps-320-120
   .png``: submit does not read them; the emulator answers them with small placeholders and
   the worker sends them as they are): wall time of the command.
3. While the submit runs and the worker drains M items, Redis ``used_memory`` is sampled
   every 0.5 s (peak, and peak minus the value before the submit: the server is shared) and
   the worker's process-tree RSS every 2 s, against items done.
4. Database size per item: ``pg_total_relation_size('items') / count`` after the submit, and
   per finished item (results + attempts) after the drain.
5. ``qocr status BATCH --json`` on that batch: wall time of the first call after the drain
   and the median of five more (each a new process, so interpreter start-up is included;
   ``bench/status_latency.py`` measures truly cold caches on its own million-item batch).

Defaults: N = 1,000,000, M = 100,000. ``--quick``: N = 10,000, M = 500.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import benchlib as bl

RPM_OUT_OF_REACH = "1000000"
# URL sources are estimated at the model's largest image (8,194 tokens on -latest) until
# settled: at the default TPM that throttle, not the pipeline, would set the drain speed.
TPM_OUT_OF_REACH = "1000000000"
URL = "http://docs.example.com/bench/scan-{:07d}-tps-320-120.png"
LOCK_KEY = "qocr:dispatcher:lock"


class RedisSampler(threading.Thread):
    """``used_memory`` every ``interval`` seconds until stopped."""

    def __init__(self, url: str, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        import redis

        self.client = redis.Redis.from_url(url)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                used = int(self.client.info("memory")["used_memory"])
            except Exception as exc:  # a blip: the next sample counts
                bl.log(f"redis sample failed: {exc!r}")
                continue
            self.samples.append((time.time(), used))

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.client.close()


def write_manifest(path: Path, count: int) -> None:
    with path.open("w") as handle:
        for start in range(0, count, 10_000):
            stop = min(count, start + 10_000)
            handle.write("".join(URL.format(i) + "\n" for i in range(start, stop)))


def mib(value: float) -> float:
    return round(value / 1024 / 1024, 2)


def status_timings(deployment: bl.Deployment, batch_id: int, runs: int) -> dict[str, Any]:
    command = [*bl.QOCR, "status", str(batch_id), "--json"]
    timings = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(
            command, env=deployment.env(), capture_output=True, text=True, timeout=120
        )
        timings.append(time.perf_counter() - started)
        if done.returncode != 0:
            return {"error": done.stderr[-500:]}
    floor = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run(
            [bl.PYTHON, "-c", "import qocr.cli.status"],
            env=deployment.env(),
            capture_output=True,
            timeout=60,
        )
        floor.append(time.perf_counter() - started)
    return {
        "first_ms": round(timings[0] * 1000),
        "warm_median_ms": round(bl.median(timings[1:]) * 1000),  # type: ignore[operator]
        "warm_runs_ms": [round(t * 1000) for t in timings[1:]],
        "interpreter_and_import_floor_ms": round(bl.median(floor) * 1000),  # type: ignore[operator]
        "note": "each a new process; first = first call after the drain (PostgreSQL cache warm)",
    }


def main() -> None:
    parser = bl.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, help="Manifest lines (default 1,000,000).")
    parser.add_argument("--drain", type=int, help="Items the worker processes (default 100,000).")
    parser.add_argument("-c", "--concurrency", type=int, default=16)
    parser.add_argument(
        "--model-tpm",
        action="store_true",
        help="Keep the model's default TPM (the URL token estimate then paces the drain).",
    )
    args = parser.parse_args()
    items = args.items or (10_000 if args.quick else 1_000_000)
    drain = min(items, args.drain or (500 if args.quick else 100_000))
    machine = bl.machine_info()
    bl.print_machine(machine)
    workdir = bl.run_dir("scale")
    manifest = workdir / "manifest.txt"
    write_manifest(manifest, items)
    bl.log(f"manifest: {items} lines, {mib(manifest.stat().st_size)} MiB")

    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(bl.REDIS_DB_PIPELINE) as broker_url,
        bl.emulator(workdir / "emulator.log") as emu,
    ):
        limits = {"QOCR_RPM": RPM_OUT_OF_REACH}
        if not args.model_tpm:
            limits["QOCR_TPM"] = TPM_OUT_OF_REACH
        deployment = bl.Deployment(workdir, database_url, broker_url, emu, extra_env=limits)
        probe = bl.SqlProbe(database_url)
        worker = deployment.worker("worker", "threads", args.concurrency)
        sampler: RedisSampler | None = None
        try:
            import redis

            client = redis.Redis.from_url(broker_url)
            if not bl.wait_until(lambda: client.exists(LOCK_KEY) == 1, 90, 0.2):
                raise RuntimeError("the worker did not start\n" + deployment.logs_tail())
            client.close()
            time.sleep(2.0)
            redis_before = bl.redis_used_memory(broker_url)
            rss_idle = bl.tree_rss_bytes(worker.pid)
            sampler = RedisSampler(broker_url)
            sampler.start()
            batch_id, count, submit_s = deployment.submit(f"@{manifest}", timeout=1800)
            bl.log(f"submit: {count} items in {submit_s:.1f} s")
            items_bytes = int(probe.scalar("SELECT pg_total_relation_size('items')"))
            items_heap = int(probe.scalar("SELECT pg_relation_size('items')"))
            rss_series: list[tuple[float, int, int]] = []
            done_sql = "SELECT count(*) FROM results"
            started = time.time()
            deadline = started + 600 + drain / 10
            done = 0
            while time.time() < deadline and worker.poll() is None:
                done = int(probe.scalar(done_sql))
                rss_series.append(
                    (round(time.time() - started, 1), done, bl.tree_rss_bytes(worker.pid))
                )
                if done >= drain:
                    break
                time.sleep(2.0)
            drain_s = time.time() - started
            alive = worker.poll() is None
        finally:
            if sampler is not None:
                sampler.stop()
            bl.stop_process(worker, grace=20)
        bl.log(f"drain: {done} items in {drain_s:.0f} s")
        results_bytes = int(probe.scalar("SELECT pg_total_relation_size('results')"))
        attempts_bytes = int(probe.scalar("SELECT pg_total_relation_size('attempts')"))
        finished = int(probe.scalar(done_sql))
        database_bytes = int(probe.scalar("SELECT pg_database_size(current_database())"))
        status = status_timings(deployment, batch_id, runs=3 if args.quick else 5)
        probe.close()

    peak = max((m for _, m in sampler.samples), default=0) if sampler else 0
    document: dict[str, Any] = {
        "bench": "scale",
        "quick": args.quick,
        "machine": machine,
        "config": {
            "items": count,
            "drain_target": drain,
            "worker": f"1 x --pool threads -c {args.concurrency}",
            "limits": limits,
            "emulator": "unlimited, zero latency, placeholder images 320x120",
        },
        "submit_wall_s": round(submit_s, 2),
        "submit_items_per_s": round(count / submit_s),
        "redis": {
            "used_memory_before_mib": mib(redis_before),
            "peak_used_memory_mib": mib(peak),
            "peak_minus_before_mib": mib(peak - redis_before),
            "samples": len(sampler.samples) if sampler else 0,
            "note": "server-wide INFO memory (the Redis is shared with other databases)",
        },
        "database": {
            "items_total_bytes_per_item": round(items_bytes / count, 1),
            "items_heap_bytes_per_item": round(items_heap / count, 1),
            "results_plus_attempts_bytes_per_finished_item": round(
                (results_bytes + attempts_bytes) / max(1, finished), 1
            ),
            "database_mib_after_drain": mib(database_bytes),
        },
        "worker_rss": rss_summary(rss_series, rss_idle),
        "drain": {
            "done": done,
            "seconds": round(drain_s, 1),
            "items_per_second": round(done / drain_s, 2) if drain_s else None,
            "worker_alive": alive,
        },
        "status_on_this_batch": status,
        "targets": {
            "submit_le_60s": submit_s <= 60,
            "redis_peak_le_50mib": peak - redis_before <= 50 * 1024 * 1024,
        },
        "workdir": str(workdir),
    }
    bl.emit(document, args.json_out)


def rss_summary(series: list[tuple[float, int, int]], idle: int) -> dict[str, Any]:
    """RSS at a few points of the drain, and its growth after the first fifth."""
    if not series:
        return {"error": "no samples"}
    last_done = series[-1][1]

    def at(fraction: float) -> tuple[int, int]:
        goal = last_done * fraction
        for _, done, rss in series:
            if done >= goal:
                return done, rss
        return series[-1][1], series[-1][2]

    points = {f"{int(f * 100)}%": at(f) for f in (0.1, 0.2, 0.5, 0.8, 1.0)}
    start_done, start_rss = points["20%"]
    end_done, end_rss = points["100%"]
    per_10k = (end_rss - start_rss) / max(1, end_done - start_done) * 10_000
    return {
        "idle_before_submit_mib": mib(idle),
        "by_items_done": {k: {"items": d, "rss_mib": mib(r)} for k, (d, r) in points.items()},
        "peak_mib": mib(max(r for _, _, r in series)),
        "growth_after_20pct_mib": mib(end_rss - start_rss),
        "growth_mib_per_10k_items": round(per_10k / 1024 / 1024, 3),
        "samples": [[t, d, mib(r)] for t, d, r in series[:: max(1, len(series) // 60)]],
    }


if __name__ == "__main__":
    main()
