"""Faults at the worst moments, with real workers: every call counted, nothing lost or doubled.

Each test strikes one fault into a running batch and then reads its cost from independent
witnesses (SQL rows, the emulator's counters): no item lost, no duplicate result, no image
paid twice beyond the calls in flight at the fault (none where the call had not returned),
every request the provider saw is an attempt row, and the batch finishes within a minute of
the fault's end. bench/faults.py runs the same faults on larger batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.engine import make_url

from qocr.models import Item, ItemState
from tests.acceptance.conftest import MakeDeployment
from tests.support.faults import FaultReport, measure, running_count
from tests.support.images import write_pngs
from tests.support.pipeline import Deployment
from tests.support.processes import kill_hard, stop_process, wait_until
from tests.support.tcp_proxy import FaultyProxy

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

MAX_ATTEMPTS = 4
RECOVERY_SECONDS = 60.0


def _assert_clean(
    report: FaultReport, *, paid_twice_at_most: int = 0, max_attempts: int = MAX_ATTEMPTS
) -> None:
    assert report.lost == 0, report
    assert report.duplicate_results == 0, report
    assert report.paid_twice <= paid_twice_at_most, report
    assert report.attempt_rows == report.provider_requests, report
    assert report.max_calls_per_image <= max_attempts, report
    assert report.seconds_to_complete <= RECOVERY_SECONDS, report


@pytest.fixture
def pg_proxy(deploy: MakeDeployment) -> Iterator[FaultyProxy]:
    """A proxy in front of the test's PostgreSQL database that can restart or take it away."""
    probe = deploy()
    url = make_url(probe.database_url)
    assert url.host and url.port, "the fault suite reaches PostgreSQL over TCP"
    proxy = FaultyProxy(url.host, url.port)
    yield proxy
    proxy.close()


def _through(deployment: Deployment, proxy: FaultyProxy) -> None:
    deployment.extra_env["QOCR_DATABASE_URL"] = proxy.url_for(deployment.database_url)


def _finish(deployment: Deployment, batch_id: int, timeout: float = 150) -> float:
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
        pytest.fail(f"batch {batch_id} still open: {open_items}\n{deployment.logs()[-20000:]}")
    return time.monotonic()


def test_postgres_restart_mid_run_keeps_every_paid_result(
    deploy: MakeDeployment, tmp_path: Path, pg_proxy: FaultyProxy
) -> None:
    deployment = deploy(latency_ms=(300, 900), seed=21)
    total = 30
    write_pngs(tmp_path / "pg-restart", total)
    batch_id = deployment.submit(str(tmp_path / "pg-restart"))
    _through(deployment, pg_proxy)

    with deployment.worker("-c", "6", QOCR_MAX_ATTEMPTS=str(MAX_ATTEMPTS)):
        assert wait_until(lambda: deployment.counts(batch_id)[ItemState.SUCCEEDED] >= 6, 60)
        in_flight = running_count(deployment, batch_id)
        pg_proxy.cut()  # every worker connection reset at once, as in a restart
        fault_ended = time.monotonic()
        finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="postgres restart",
        total=total,
        in_flight_at_fault=in_flight,
        fault_ended_at=fault_ended,
        finished_at=finished,
    )
    assert report.succeeded == total, report
    # The provider was reachable throughout: a paid answer is saved, never bought again.
    _assert_clean(report, paid_twice_at_most=0)


def test_postgres_away_for_a_while_costs_time_not_calls(
    deploy: MakeDeployment, tmp_path: Path, pg_proxy: FaultyProxy
) -> None:
    deployment = deploy(latency_ms=(300, 900), seed=22)
    total = 30
    write_pngs(tmp_path / "pg-down", total)
    batch_id = deployment.submit(str(tmp_path / "pg-down"))
    _through(deployment, pg_proxy)

    with deployment.worker("-c", "6", QOCR_MAX_ATTEMPTS=str(MAX_ATTEMPTS)):
        assert wait_until(lambda: deployment.counts(batch_id)[ItemState.SUCCEEDED] >= 6, 60)
        in_flight = running_count(deployment, batch_id)
        pg_proxy.down()
        time.sleep(20)
        pg_proxy.up()
        fault_ended = time.monotonic()
        finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="postgres down 20 s",
        total=total,
        in_flight_at_fault=in_flight,
        fault_ended_at=fault_ended,
        finished_at=finished,
    )
    assert report.succeeded == total, report
    _assert_clean(report, paid_twice_at_most=0)


def test_worker_killed_at_startup_strands_no_received_message(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(1500, 2500), seed=23)
    total = 40
    write_pngs(tmp_path / "startup", total)
    batch_id = deployment.submit(str(tmp_path / "startup"))
    prefork = ("--pool", "prefork", "-c", "4")
    env = {"QOCR_MAX_ATTEMPTS": str(MAX_ATTEMPTS), "QOCR_LEASE_SECONDS": "15"}

    broker = redis.Redis.from_url(deployment.broker_url)
    with deployment.worker(*prefork, name="doomed", **env) as doomed:
        # Killed as soon as it holds messages (kombu's `unacked` hash), before or just as
        # its pool starts them: received, not claimed, so no SQL lease covers them yet.
        assert wait_until(lambda: broker.hlen("unacked") > 0, 60, interval=0.02)
        kill_hard(doomed)
        in_flight = running_count(deployment, batch_id)
        received = broker.hlen("unacked")
    killed_at = time.monotonic()

    with deployment.worker(*prefork, name="survivor", **env):
        finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="SIGKILL at start-up",
        total=total,
        in_flight_at_fault=in_flight,
        fault_ended_at=killed_at,
        finished_at=finished,
    )
    assert received > in_flight, (received, in_flight)
    assert report.succeeded == total, report
    # Items whose message was received but not started carry no call: only the ones
    # running at the kill may have been paid for already.
    _assert_clean(report, paid_twice_at_most=in_flight)
    # The survivor's own items took their time too; the stranded ones must not add a
    # visibility timeout (15 minutes) on top: the whole batch ends within a minute.
    assert finished - killed_at <= RECOVERY_SECONDS + 40, report


def test_sigterm_to_every_worker_then_restart_loses_and_doubles_nothing(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(300, 900), seed=24)
    total = 40
    write_pngs(tmp_path / "sigterm", total)
    batch_id = deployment.submit(str(tmp_path / "sigterm"))
    env = {"QOCR_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}

    with deployment.worker(name="a", **env) as a, deployment.worker(name="b", **env) as b:
        assert wait_until(lambda: deployment.counts(batch_id)[ItemState.SUCCEEDED] >= 8, 60)
        in_flight = running_count(deployment, batch_id)
        stop_process(a, grace=30)
        stop_process(b, grace=30)
    stopped_at = time.monotonic()

    with deployment.worker(name="c", **env):
        finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="SIGTERM every worker, restart",
        total=total,
        in_flight_at_fault=in_flight,
        fault_ended_at=stopped_at,
        finished_at=finished,
    )
    assert report.succeeded == total, report
    # A warm shutdown finishes the calls it started: nothing is paid twice.
    _assert_clean(report, paid_twice_at_most=0)


def test_a_provider_outage_fails_no_item_and_the_fleet_recovers_fast(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(100, 300), seed=25)
    total = 40
    write_pngs(tmp_path / "outage", total)
    batch_id = deployment.submit(str(tmp_path / "outage"))
    env = {"QOCR_MAX_ATTEMPTS": "8"}  # the default

    with deployment.worker("-c", "6", **env):
        assert wait_until(lambda: deployment.counts(batch_id)[ItemState.SUCCEEDED] >= 5, 60)
        in_flight = running_count(deployment, batch_id)
        deployment.emulator.set_faults(error_rate=1.0)  # every call: 500 or 503
        time.sleep(40)
        deployment.emulator.set_faults(error_rate=0.0)
        recovered = time.monotonic()
        finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="provider outage 40 s",
        total=total,
        in_flight_at_fault=in_flight,
        fault_ended_at=recovered,
        finished_at=finished,
    )
    # The breaker paused the fleet: no item spent its attempts on the outage.
    assert report.succeeded == total, report
    _assert_clean(report, paid_twice_at_most=0, max_attempts=8)
    assert report.seconds_to_complete <= 30 + 15, report  # back at full rate within ~30 s
    # Paused, not hammering: far fewer calls than items x attempts during the outage.
    failed_calls = report.provider_requests - deployment.emulator.stats()["successes"]
    assert failed_calls < total, report


def test_a_provider_that_hangs_is_cut_at_the_deadline(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(50, 150), seed=26, hang_rate=0.2, trickle_rate=0.1)
    total = 20
    write_pngs(tmp_path / "hang", total)
    batch_id = deployment.submit(str(tmp_path / "hang"))
    env = {"QOCR_MAX_ATTEMPTS": "8", "QOCR_CALL_DEADLINE_SECONDS": "3"}

    started = time.monotonic()
    with deployment.worker("-c", "4", **env):
        finished = _finish(deployment, batch_id, timeout=200)
        # The faults stop once every item has had its chances; the rest must end anyway.

    report = measure(
        deployment,
        batch_id,
        scenario="provider hangs and trickles",
        total=total,
        in_flight_at_fault=0,
        fault_ended_at=started,
        finished_at=finished,
    )
    stats = deployment.emulator.stats()
    assert stats["hangs"] + stats["trickles"] > 0, stats
    assert report.lost == 0 and report.duplicate_results == 0, report
    assert report.attempt_rows == report.provider_requests, report
    assert report.max_calls_per_image <= 8, report
    # A hung call costs its deadline, not a worker slot forever.
    assert report.succeeded + report.failed == total, report


def test_over_long_provider_fields_are_stored_and_calls_stay_bounded(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(20, 60), seed=27, long_fields_rate=1.0)
    total = 6
    write_pngs(tmp_path / "long", total)
    batch_id = deployment.submit(str(tmp_path / "long"))

    with deployment.worker("-c", "3", QOCR_MAX_ATTEMPTS="3"):
        finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="over-long provider fields",
        total=total,
        in_flight_at_fault=0,
        fault_ended_at=finished,
        finished_at=finished,
    )
    # Every call saved its attempt (300-character codes and request ids, 5 MB messages
    # capped), so each image was called exactly QOCR_MAX_ATTEMPTS times, then failed.
    assert report.failed == total, report
    assert report.attempt_rows == report.provider_requests == 3 * total, report
    assert report.max_calls_per_image == 3, report
    failures = deployment.failures(batch_id)
    assert all(message and len(message) < 10_000 for _, message in failures.values())


def test_a_broker_blip_kills_no_call_in_flight(deploy: MakeDeployment, tmp_path: Path) -> None:
    deployment = deploy(latency_ms=(1500, 2500), seed=28)
    url = make_url(deployment.broker_url)
    assert url.host and url.port
    total = 16
    write_pngs(tmp_path / "blip", total)
    batch_id = deployment.submit(str(tmp_path / "blip"))
    with FaultyProxy(url.host, url.port) as proxy:
        deployment.extra_env["QOCR_BROKER_URL"] = proxy.url_for(deployment.broker_url)
        deployment.extra_env["QOCR_REDIS_URL"] = deployment.broker_url  # throttle: direct
        with deployment.worker("-c", "4"):
            assert wait_until(lambda: running_count(deployment, batch_id) >= 4, 60)
            in_flight = running_count(deployment, batch_id)
            proxy.cut()
            cut_at = time.monotonic()
            finished = _finish(deployment, batch_id)

    report = measure(
        deployment,
        batch_id,
        scenario="broker connection cut",
        total=total,
        in_flight_at_fault=in_flight,
        fault_ended_at=cut_at,
        finished_at=finished,
    )
    assert report.succeeded == total, report
    # The calls in flight finished and were saved: none was cancelled and paid again.
    _assert_clean(report, paid_twice_at_most=0)
