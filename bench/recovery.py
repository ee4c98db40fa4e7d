"""Recovery: kill -9 a worker mid-run; how soon its items run again, and what is paid twice.

    python bench/recovery.py [--quick] [--items N] [--lease-seconds S] [--json-out F]

Two ``qocr worker --pool threads -c 16`` processes (A, then B once A holds the dispatcher
lock) process distinct PNGs against the emulator (no limit, 0.5-3 s latency). Once a tenth
of the batch is done, A's whole process group gets SIGKILL (``--kill dispatcher``, the
default and the worst case: the fleet also loses its dispatcher until the lock's 15 s TTL
runs out) or B's (``--kill worker``). The items the killed worker held (running, with the
lease token they had at the kill, later seen back in the queue or running under a new
token; the survivor's finish under the token they had) are its orphans. For each orphan:
seconds from the kill until it was back in the queue (its lease expired and the dispatcher
reaped it) and until it was claimed again. Then the batch is drained and the
emulator says which images were paid for more than once (``successes_per_image`` > 1);
only the orphans whose call was in flight at the kill may be.

Default lease: ``QOCR_LEASE_SECONDS`` unset (45 s). ``--quick`` uses a 5 s lease, 100
items and ``--kill worker`` (and says so).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import benchlib as bl

LATENCY_MS = (500.0, 3000.0)
CONCURRENCY = 16
LOCK_KEY = "qocr:dispatcher:lock"  # scheduler.dispatch.LOCK_KEY
PAGE = (320, 120)


def follow(
    probe: bl.SqlProbe, held: dict[int, tuple[str, float | None]], killed_at: float
) -> tuple[dict[int, tuple[str, float | None]], dict[int, float], dict[int, float]]:
    """Watch the items running at the kill until each is told apart.

    The survivor's items finish under the lease token they had (their token is cleared as
    they leave running); the dead worker's orphans are seen back in the queue (reaped) or
    running under a new token (claimed again). Polled every 0.2 s: a claim again is seen
    before it can finish (every call takes at least the emulator's 0.5 s).
    Returns the orphans, and seconds from the kill until each was returned and run again.
    """
    orphans: dict[int, tuple[str, float | None]] = {}
    survivors: set[int] = set()
    returned_after: dict[int, float] = {}
    rerun_after: dict[int, float] = {}
    deadline = time.time() + 240
    while time.time() < deadline:
        pending = [i for i in held if i not in survivors and i not in rerun_after]
        if not pending:
            break
        rows = probe.rows(
            "SELECT id, state, lease_token FROM items WHERE id = ANY(:ids)", ids=pending
        )
        now = time.time() - killed_at
        for item_id, state, token in rows:
            first_token = held[item_id][0]
            if state == "queued":
                orphans[item_id] = held[item_id]
                returned_after.setdefault(item_id, now)
            elif state == "running" and token != first_token:
                orphans[item_id] = held[item_id]
                returned_after.setdefault(item_id, now)
                rerun_after[item_id] = now
            elif state != "running" and item_id in orphans:
                rerun_after[item_id] = now  # returned, then claimed and done between polls
            elif state != "running":
                survivors.add(item_id)
        time.sleep(0.2)
    return orphans, returned_after, rerun_after


def first_tick_redispatch(workdir: Path) -> int:
    """Items the first dispatcher tick published again: here the batch is submitted before
    any worker ran, so the broker has no epoch yet (the workers log how many)."""
    pattern = re.compile(r"broker has no epoch \(restarted\?\): (\d+) items dispatched again")
    total = 0
    for path in workdir.glob("worker-*.log"):
        total += sum(int(n) for n in pattern.findall(path.read_text(errors="replace")))
    return total


def main() -> None:
    parser = bl.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, help="Default 800 (quick 150).")
    parser.add_argument("--lease-seconds", type=int, help="QOCR_LEASE_SECONDS (default: unset).")
    parser.add_argument(
        "--kill",
        choices=["dispatcher", "worker"],
        help="Kill the dispatcher-lock holder (default) or the other worker (quick default).",
    )
    args = parser.parse_args()
    items = args.items or (100 if args.quick else 800)
    lease = args.lease_seconds or (5 if args.quick else None)
    kill = args.kill or ("worker" if args.quick else "dispatcher")
    machine = bl.machine_info()
    bl.print_machine(machine)
    workdir = bl.run_dir("recovery")
    folder = bl.image_folder(items, PAGE, root=bl.OUT / "images-recovery")
    env = {"QOCR_LEASE_SECONDS": str(lease)} if lease else {}
    import redis

    with (
        bl.scratch_database() as database_url,
        bl.scratch_redis(bl.REDIS_DB_PIPELINE) as broker_url,
        bl.emulator(workdir / "emulator.log", latency_ms=LATENCY_MS) as emu,
    ):
        deployment = bl.Deployment(workdir, database_url, broker_url, emu, extra_env=env)
        probe = bl.SqlProbe(database_url)
        client = redis.Redis.from_url(broker_url)
        batch_id, count, _ = deployment.submit(str(folder))
        a = deployment.worker("worker-a", "threads", CONCURRENCY)
        b = None
        try:
            if not bl.wait_until(lambda: client.exists(LOCK_KEY) == 1, 60, 0.2):
                raise RuntimeError(
                    "worker A never took the dispatcher lock\n" + deployment.logs_tail()
                )
            b = deployment.worker("worker-b", "threads", CONCURRENCY)
            done_sql = "SELECT count(*) FROM items WHERE state = 'succeeded'"
            if not bl.wait_until(lambda: probe.scalar(done_sql) >= count // 10, 120, 0.2):
                raise RuntimeError("no progress before the kill\n" + deployment.logs_tail())
            victim = a if kill == "dispatcher" else b
            bl.kill_group(victim)
            killed_at = time.time()
            held = {
                int(i): (token, float(lease_until) if lease_until is not None else None)
                for i, token, lease_until in probe.rows(
                    "SELECT id, lease_token, extract(epoch FROM lease_until) FROM items "
                    "WHERE state = 'running'"
                )
            }
            done_at_kill = int(probe.scalar(done_sql))
            bl.log(f"killed {kill} at {done_at_kill}/{count} done; {len(held)} running")
            orphans, returned_after, rerun_after = follow(probe, held, killed_at)
            bl.log(f"{len(orphans)} orphans (held by the killed worker)")
            finished = bl.wait_until(
                lambda: (
                    probe.scalar("SELECT count(*) FROM items WHERE state IN ('queued', 'running')")
                    == 0
                ),
                timeout=240,
                interval=0.5,
            )
        finally:
            bl.stop_process(a)
            if b is not None:
                bl.stop_process(b)
        stats = emu.stats()
        states = deployment.count_by_state(batch_id)
        redispatched = first_tick_redispatch(workdir)
        results = int(probe.scalar("SELECT count(*) FROM results"))
        probe.close()
        client.close()

    paid = [n for n in stats["successes_per_image"].values()]
    paid_twice = sum(1 for n in paid if n > 1)
    lease_left = [lease_until - killed_at for _, lease_until in orphans.values() if lease_until]
    waits = sorted(rerun_after.values())
    returned = sorted(returned_after.values())
    document: dict[str, Any] = {
        "bench": "recovery",
        "quick": args.quick,
        "machine": machine,
        "config": {
            "items": count,
            "lease_seconds": lease or "default (45)",
            "workers": "2 x --pool threads -c 16; killed: "
            + (
                "A, the dispatcher-lock holder" if kill == "dispatcher" else "B, not the dispatcher"
            ),
            "latency_ms": list(LATENCY_MS),
        },
        "redispatched_by_first_tick": redispatched,
        "done_at_kill": done_at_kill,
        "running_at_kill": len(held),
        "orphans": len(orphans),
        "orphans_rerun": len(rerun_after),
        "rerun_after_s": {
            "min": bl.rounded(waits[0] if waits else None, 2),
            "median": bl.rounded(bl.median(waits), 2),
            "max": bl.rounded(waits[-1] if waits else None, 2),
        },
        "returned_to_queue_after_s": {
            "min": bl.rounded(min(returned) if returned else None, 2),
            "median": bl.rounded(bl.median(returned), 2),
            "max": bl.rounded(max(returned) if returned else None, 2),
        },
        "lease_left_at_kill_s": {
            "min": bl.rounded(min(lease_left) if lease_left else None, 2),
            "max": bl.rounded(max(lease_left) if lease_left else None, 2),
        },
        "batch_finished": finished,
        "states": states,
        "results": results,
        "images_paid": len(paid),
        "images_paid_twice": paid_twice,
        "images_paid_more_than_twice": sum(1 for n in paid if n > 2),
        "paid_twice_beyond_orphans": max(0, paid_twice - len(orphans)),
        "targets": {
            "rerun_max_le_60s": bool(waits) and waits[-1] <= 60,
            "no_double_pay_beyond_in_flight": paid_twice <= len(orphans),
            "every_item_one_result": results == count and states.get("succeeded") == count,
        },
        "workdir": str(workdir),
    }
    bl.emit(document, args.json_out)


if __name__ == "__main__":
    main()
