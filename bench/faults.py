"""Faults: what each fault costs a running batch, on batches larger than the tests'.

    python bench/faults.py [--quick] [--only NAME ...] [--json-out F] [--results bench/RESULTS.md]

Runs the fault suite's scenarios (tests/support/fault_scenarios.py: the same code the
acceptance tier asserts on) with real ``qocr worker`` processes, a fresh PostgreSQL
database and Redis database each, and the emulator in this process: PostgreSQL restart,
PostgreSQL down 30 s, Redis restarted empty, SIGKILL of a worker at start-up and mid-run,
SIGTERM of every worker and a restart, a provider outage of 60 s, a provider that hangs,
a provider that answers over-long fields, a broker connection cut. For each: items lost
(must be 0), duplicate results (0), images paid twice (at most the calls in flight at the
fault), the most calls one image got (at most QOCR_MAX_ATTEMPTS), attempt rows that sent a
request against requests the provider saw (equal), and seconds from the fault's end to the
batch's end (at most 60). ``--results`` replaces the "Faults" section of that file.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchlib as bl

sys.path.insert(0, str(bl.REPO))

from qocr.emulator.testing import running_emulator
from tests.support import fault_scenarios as scenarios
from tests.support.fault_scenarios import Sizes
from tests.support.faults import FaultReport
from tests.support.pipeline import Deployment
from tests.support.private_redis import private_redis_server

SECTION = "## Faults"
RECOVERY_SECONDS = 60.0


def _redis_restart(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    with private_redis_server(tmp / "redis") as server:
        return scenarios.redis_restarted_empty(deployment, tmp, sizes, server)


# name → (scenario, emulator latency in ms, full sizes, quick sizes)
Run = tuple[Callable[[Deployment, Path, Sizes], FaultReport], tuple[float, float], Sizes, Sizes]
RUNS: dict[str, Run] = {
    "postgres_restart": (
        scenarios.postgres_restart,
        (500, 3000),
        Sizes(items=200, slots=16, max_attempts=8),
        Sizes(items=30, slots=6, max_attempts=8),
    ),
    "postgres_down": (
        scenarios.postgres_down,
        (500, 3000),
        Sizes(items=200, slots=16, fault_seconds=30, max_attempts=8),
        Sizes(items=30, slots=6, fault_seconds=15, max_attempts=8),
    ),
    "redis_restart": (
        _redis_restart,
        (500, 3000),
        Sizes(items=200, slots=16, max_attempts=8),
        Sizes(items=30, slots=6, max_attempts=8),
    ),
    "sigkill_startup": (
        lambda d, t, s: scenarios.sigkill_at_startup(d, t, s, lease_seconds=45),
        (1500, 3000),
        Sizes(items=80, slots=8, max_attempts=8),
        Sizes(items=30, slots=4, max_attempts=8),
    ),
    "sigkill_mid_run": (
        lambda d, t, s: scenarios.sigkill_mid_run(d, t, s, lease_seconds=45),
        (500, 3000),
        Sizes(items=200, slots=16, max_attempts=8),
        Sizes(items=30, slots=6, max_attempts=8),
    ),
    "sigterm_restart": (
        scenarios.sigterm_and_restart,
        (500, 3000),
        Sizes(items=200, slots=16, max_attempts=8),
        Sizes(items=30, slots=6, max_attempts=8),
    ),
    "provider_outage": (
        scenarios.provider_outage,
        (500, 3000),
        Sizes(items=200, slots=16, fault_seconds=60, max_attempts=8),
        Sizes(items=40, slots=6, fault_seconds=30, max_attempts=8),
    ),
    "provider_hangs": (
        scenarios.provider_hangs,
        (500, 3000),
        Sizes(items=100, slots=16, max_attempts=8),
        Sizes(items=20, slots=4, max_attempts=8),
    ),
    "overlong_fields": (
        scenarios.overlong_fields,
        (50, 200),
        Sizes(items=20, slots=8, max_attempts=8),
        Sizes(items=6, slots=3, max_attempts=3),
    ),
    "broker_blip": (
        scenarios.broker_blip,
        (1500, 3000),
        Sizes(items=100, slots=16, max_attempts=8),
        Sizes(items=16, slots=4, max_attempts=8),
    ),
}


@contextmanager
def deployment(tmp: Path, redis_db: int, latency_ms: tuple[float, float]) -> Iterator[Deployment]:
    with ExitStack() as stack:
        database_url = stack.enter_context(bl.scratch_database("qocr_faults"))
        broker_url = stack.enter_context(bl.scratch_redis(redis_db))
        emulator = stack.enter_context(
            running_emulator(recognizer="hash", latency_ms=latency_ms, seed=7)
        )
        target = Deployment(
            tmp=tmp, database_url=database_url, broker_url=broker_url, emulator=emulator
        )
        try:
            yield target
        finally:
            target.close()


def verdict(report: FaultReport, sizes: Sizes) -> list[str]:
    """What the report breaks of the suite's promises (empty: all kept)."""
    broken = []
    if report.lost:
        broken.append("items lost")
    if report.duplicate_results:
        broken.append("duplicate results")
    if report.tallies_off:
        broken.append("tallies differ from GROUP BY")
    if report.paid_twice > report.in_flight_at_fault:
        broken.append("paid twice beyond the calls in flight")
    if report.max_calls_per_image > sizes.max_attempts:
        broken.append("calls per image over QOCR_MAX_ATTEMPTS")
    # A call counted in the instant before it would have left, when the fault struck, is
    # an attempt row the provider never saw: conservative, and at most one per call in
    # flight. An uncounted request is never allowed.
    uncounted = report.provider_requests - report.attempt_rows
    if uncounted > 0 or -uncounted > report.in_flight_at_fault:
        broken.append("attempt rows differ from provider requests")
    if report.seconds_to_complete > RECOVERY_SECONDS:
        broken.append("over 60 s to complete")
    return broken


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| fault | items | lost | duplicates | paid twice / in flight | max calls per image "
        "(limit) | attempt rows / provider requests | tallies ≠ GROUP BY "
        "| s from fault end to done | kept |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        report, limit, broken = row["report"], row["max_attempts"], row["broken"]
        lines.append(
            f"| {report['scenario']} | {report['items']} | {report['lost']} "
            f"| {report['duplicate_results']} "
            f"| {report['paid_twice']} / {report['in_flight_at_fault']} "
            f"| {report['max_calls_per_image']} ({limit}) "
            f"| {report['attempt_rows']} / {report['provider_requests']} "
            f"| {report.get('tallies_off', 0)} "
            f"| {report['seconds_to_complete']} | {'yes' if not broken else ', '.join(broken)} |"
        )
    return header + "\n".join(lines) + "\n"


def write_section(results: Path, body: str) -> None:
    text = results.read_text() if results.exists() else "# qocr benchmark results\n"
    start = text.find(SECTION + "\n")
    if start == -1:
        text = text.rstrip() + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[end + 1 :] if end != -1 else "")
    results.write_text(text)


def main() -> None:
    parser = bl.base_parser(__doc__ or "")
    parser.add_argument("--only", action="append", choices=sorted(RUNS), default=[])
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--redis-db", type=int, default=bl.REDIS_DB_PIPELINE)
    args = parser.parse_args()
    names = args.only or list(RUNS)
    info = bl.machine_info()
    bl.print_machine(info)
    rows: list[dict[str, Any]] = []
    for name in names:
        scenario, latency_ms, full, quick = RUNS[name]
        sizes = quick if args.quick else full
        bl.log(f"{name}: {sizes}")
        started = time.monotonic()
        with (
            tempfile.TemporaryDirectory(prefix=f"qocr-faults-{name}-") as folder,
            deployment(Path(folder), args.redis_db, latency_ms) as target,
        ):
            report = scenario(target, Path(folder), sizes)
        broken = verdict(report, sizes)
        bl.log(f"{name}: {report} {broken or 'kept'}")
        rows.append(
            {
                "name": name,
                "report": report.as_dict(),
                "max_attempts": sizes.max_attempts,
                "broken": broken,
                "wall_seconds": round(time.monotonic() - started, 1),
            }
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f"{SECTION}\n\n"
        f"`python bench/faults.py{' --quick' if args.quick else ''}`, {stamp}, commit "
        f"`{info.get('git_commit')}`"
        f"{' plus uncommitted changes' if info.get('git_dirty') else ''}; "
        "real `qocr worker` processes (threads pool unless the fault needs prefork) against "
        "the emulator (0.5-3 s per call unless said), QOCR_MAX_ATTEMPTS as in the table. "
        "One run each on a shared 2-core machine.\n\n" + table(rows)
    )
    print(body)
    if args.results is not None:
        write_section(args.results, body)
    bl.emit({"machine": info, "faults": rows}, args.json_out)
    if any(row["broken"] for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
