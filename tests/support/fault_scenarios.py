"""The fault suite's scenarios: one fault struck into a running batch, its cost measured.

Each scenario takes a :class:`Deployment` (emulator, PostgreSQL, Redis, worker processes),
a folder and sizes, runs a batch, strikes its fault at the moment that hurts, waits for the
batch to end and returns a :class:`FaultReport`. tests/acceptance/test_faults.py runs them
small and asserts on the reports; bench/faults.py runs them larger and records the table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from qocr.models import Item, ItemState
from tests.support.faults import FaultReport, measure, running_count
from tests.support.images import write_pngs
from tests.support.pipeline import Deployment
from tests.support.private_redis import PrivateRedis
from tests.support.processes import kill_hard, stop_process, wait_until
from tests.support.tcp_proxy import FaultyProxy

FINISH_TIMEOUT_SECONDS = 150.0


class BatchStuck(AssertionError):
    """The batch did not end: its open items and the workers' logs say why."""


@dataclass(frozen=True)
class Sizes:
    """How big a scenario runs: items, worker slots, and how long the fault lasts."""

    items: int = 30
    slots: int = 6
    fault_seconds: float = 20.0
    max_attempts: int = 4


def finish(deployment: Deployment, batch_id: int, timeout: float = FINISH_TIMEOUT_SECONDS) -> float:
    """Wait for the batch to end; the monotonic time it was seen ended."""
    if not deployment.wait_finished(batch_id, timeout=timeout):
        with deployment.store.sessions() as session:
            open_items = session.execute(
                select(
                    Item.id,
                    Item.state,
                    Item.attempts,
                    Item.lease_until,
                    Item.dispatched_at,
                    Item.not_before,
                    Item.last_error_code,
                ).where(Item.batch_id == batch_id, Item.state.in_(["queued", "running"]))
            ).all()
        raise BatchStuck(f"batch {batch_id} still open: {open_items}\n{deployment.logs()[-20000:]}")
    return time.monotonic()


def _batch(deployment: Deployment, tmp: Path, name: str, items: int) -> int:
    write_pngs(tmp / name, items)
    return deployment.submit(str(tmp / name))


def _succeeded_at_least(deployment: Deployment, batch_id: int, count: int) -> None:
    assert wait_until(lambda: deployment.counts(batch_id)[ItemState.SUCCEEDED] >= count, 90)


def _report(
    deployment: Deployment,
    batch_id: int,
    scenario: str,
    items: int,
    in_flight: int,
    fault_ended: float,
    finished: float,
) -> FaultReport:
    return measure(
        deployment,
        batch_id,
        scenario=scenario,
        total=items,
        in_flight_at_fault=in_flight,
        fault_ended_at=fault_ended,
        finished_at=finished,
    )


def _database_proxy(deployment: Deployment) -> FaultyProxy:
    url = make_url(deployment.database_url)
    assert url.host and url.port, "the fault suite reaches PostgreSQL over TCP"
    proxy = FaultyProxy(url.host, url.port)
    deployment.extra_env["QOCR_DATABASE_URL"] = proxy.url_for(deployment.database_url)
    return proxy


def postgres_restart(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """Every worker connection reset at once mid-run, as a server restart does."""
    batch_id = _batch(deployment, tmp, "pg-restart", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts)}
    with _database_proxy(deployment) as proxy, deployment.worker("-c", str(sizes.slots), **env):
        _succeeded_at_least(deployment, batch_id, sizes.items // 5)
        in_flight = running_count(deployment, batch_id)
        proxy.cut()
        fault_ended = time.monotonic()
        finished = finish(deployment, batch_id)
    return _report(
        deployment, batch_id, "PostgreSQL restart", sizes.items, in_flight, fault_ended, finished
    )


def postgres_down(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """PostgreSQL unreachable for ``fault_seconds`` mid-run (connections cut, new refused)."""
    batch_id = _batch(deployment, tmp, "pg-down", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts)}
    with _database_proxy(deployment) as proxy, deployment.worker("-c", str(sizes.slots), **env):
        _succeeded_at_least(deployment, batch_id, sizes.items // 5)
        in_flight = running_count(deployment, batch_id)
        proxy.down()
        time.sleep(sizes.fault_seconds)
        proxy.up()
        fault_ended = time.monotonic()
        finished = finish(deployment, batch_id)
    scenario = f"PostgreSQL down {sizes.fault_seconds:.0f} s"
    return _report(deployment, batch_id, scenario, sizes.items, in_flight, fault_ended, finished)


def sigkill_at_startup(
    deployment: Deployment, tmp: Path, sizes: Sizes, lease_seconds: int = 15
) -> FaultReport:
    """A prefork worker killed the moment it holds messages, before or as it starts them."""
    batch_id = _batch(deployment, tmp, "startup", sizes.items)
    prefork = ("--pool", "prefork", "-c", str(sizes.slots))
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts), "QOCR_LEASE_SECONDS": str(lease_seconds)}
    broker = redis.Redis.from_url(deployment.broker_url)
    with deployment.worker(*prefork, name="doomed", **env) as doomed:
        # kombu's `unacked` hash: messages fetched by the worker, not yet acked.
        assert wait_until(lambda: broker.hlen("unacked") > 0, 60, interval=0.02)
        kill_hard(doomed)
        in_flight = running_count(deployment, batch_id)
    killed_at = time.monotonic()
    with deployment.worker(*prefork, name="survivor", **env):
        finished = finish(deployment, batch_id)
    broker.close()
    return _report(
        deployment, batch_id, "SIGKILL at start-up", sizes.items, in_flight, killed_at, finished
    )


def sigkill_mid_run(
    deployment: Deployment, tmp: Path, sizes: Sizes, lease_seconds: int = 15
) -> FaultReport:
    """A worker's whole process group killed mid-run, its calls in flight."""
    batch_id = _batch(deployment, tmp, "mid-run", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts), "QOCR_LEASE_SECONDS": str(lease_seconds)}
    with deployment.worker("-c", str(sizes.slots), name="doomed", **env) as doomed:
        _succeeded_at_least(deployment, batch_id, sizes.items // 5)
        in_flight = running_count(deployment, batch_id)
        kill_hard(doomed)
    killed_at = time.monotonic()
    with deployment.worker("-c", str(sizes.slots), name="survivor", **env):
        finished = finish(deployment, batch_id)
    return _report(
        deployment, batch_id, "SIGKILL mid-run", sizes.items, in_flight, killed_at, finished
    )


def sigterm_and_restart(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """SIGTERM to every worker mid-run (a deploy), then a new worker."""
    batch_id = _batch(deployment, tmp, "sigterm", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts)}
    slots = str(max(1, sizes.slots // 2))
    with (
        deployment.worker("-c", slots, name="a", **env) as a,
        deployment.worker("-c", slots, name="b", **env) as b,
    ):
        _succeeded_at_least(deployment, batch_id, sizes.items // 5)
        in_flight = running_count(deployment, batch_id)
        stop_process(a, grace=30)
        stop_process(b, grace=30)
    stopped_at = time.monotonic()
    with deployment.worker("-c", str(sizes.slots), name="c", **env):
        finished = finish(deployment, batch_id)
    return _report(
        deployment,
        batch_id,
        "SIGTERM every worker, restart",
        sizes.items,
        in_flight,
        stopped_at,
        finished,
    )


def redis_restarted_empty(
    deployment: Deployment, tmp: Path, sizes: Sizes, private_redis: PrivateRedis
) -> FaultReport:
    """The broker killed and started again with nothing (no persistence) mid-run."""
    deployment.broker_url = private_redis.url
    batch_id = _batch(deployment, tmp, "redis-restart", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts)}
    with deployment.worker("-c", str(sizes.slots), **env):
        _succeeded_at_least(deployment, batch_id, sizes.items // 5)
        in_flight = running_count(deployment, batch_id)
        private_redis.kill()
        time.sleep(2)
        private_redis.start()
        restarted = time.monotonic()
        finished = finish(deployment, batch_id)
    return _report(
        deployment,
        batch_id,
        "Redis restarted empty",
        sizes.items,
        in_flight,
        restarted,
        finished,
    )


def provider_outage(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """Every call answered 500/503 for ``fault_seconds``."""
    batch_id = _batch(deployment, tmp, "outage", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts)}
    with deployment.worker("-c", str(sizes.slots), **env):
        _succeeded_at_least(deployment, batch_id, sizes.items // 8)
        in_flight = running_count(deployment, batch_id)
        deployment.emulator.set_faults(error_rate=1.0)
        time.sleep(sizes.fault_seconds)
        deployment.emulator.set_faults(error_rate=0.0)
        recovered = time.monotonic()
        finished = finish(deployment, batch_id)
    scenario = f"provider outage {sizes.fault_seconds:.0f} s"
    return _report(deployment, batch_id, scenario, sizes.items, in_flight, recovered, finished)


def provider_hangs(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """A fifth of the calls never answered, a tenth trickled a byte a second."""
    deployment.emulator.set_faults(hang_rate=0.2, trickle_rate=0.1)
    batch_id = _batch(deployment, tmp, "hang", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts), "QOCR_CALL_DEADLINE_SECONDS": "3"}
    started = time.monotonic()
    with deployment.worker("-c", str(sizes.slots), **env):
        finished = finish(deployment, batch_id, timeout=200)
    return _report(
        deployment, batch_id, "provider hangs and trickles", sizes.items, 0, started, finished
    )


def overlong_fields(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """A third of the calls answered 500 with a 300-character code and request id and a
    5 MB message (not all: a provider failing every call is an outage, the breaker's case)."""
    deployment.emulator.set_faults(long_fields_rate=0.3)
    batch_id = _batch(deployment, tmp, "long", sizes.items)
    env = {"QOCR_MAX_ATTEMPTS": str(sizes.max_attempts)}
    with deployment.worker("-c", str(sizes.slots), **env):
        finished = finish(deployment, batch_id)
    return _report(
        deployment, batch_id, "over-long provider fields", sizes.items, 0, finished, finished
    )


def broker_blip(deployment: Deployment, tmp: Path, sizes: Sizes) -> FaultReport:
    """Every worker connection to the broker reset while calls are in flight."""
    url = make_url(deployment.broker_url)
    assert url.host and url.port
    batch_id = _batch(deployment, tmp, "blip", sizes.items)
    with FaultyProxy(url.host, url.port) as proxy:
        deployment.extra_env["QOCR_BROKER_URL"] = proxy.url_for(deployment.broker_url)
        deployment.extra_env["QOCR_REDIS_URL"] = deployment.broker_url  # the throttle: direct
        with deployment.worker("-c", str(sizes.slots)):
            assert wait_until(lambda: running_count(deployment, batch_id) >= sizes.slots, 60)
            in_flight = running_count(deployment, batch_id)
            proxy.cut()
            cut_at = time.monotonic()
            finished = finish(deployment, batch_id)
    return _report(
        deployment, batch_id, "broker connection cut", sizes.items, in_flight, cut_at, finished
    )


Scenario = Callable[[Deployment, Path, Sizes], FaultReport]
