"""Faults at the worst moments, with real workers: every call counted, nothing lost or doubled.

Each test strikes one fault into a running batch (tests/support/fault_scenarios.py) and
reads its cost from independent witnesses (SQL rows, the emulator's counters): no item lost,
no duplicate result, no image paid twice beyond the calls in flight at the fault (none where
the call had not returned), every request the provider saw is an attempt row, no image
called more than QOCR_MAX_ATTEMPTS times, and the batch finished within a minute of the
fault's end. bench/faults.py runs the same scenarios on larger batches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from qocr.models import Attempt
from tests.support import fault_scenarios as scenarios
from tests.support.fault_scenarios import Sizes
from tests.support.faults import FaultReport
from tests.support.pipeline import MakeDeployment
from tests.support.private_redis import private_redis_server

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

RECOVERY_SECONDS = 60.0
SMALL = Sizes(items=30, slots=6, fault_seconds=20, max_attempts=4)


def assert_clean(
    report: FaultReport, sizes: Sizes, *, paid_twice_at_most: int = 0, fault_mid_call: bool = False
) -> None:
    assert report.lost == 0, report
    assert report.duplicate_results == 0, report
    assert report.tallies_off == 0, report
    assert report.paid_twice <= paid_twice_at_most, report
    # Every request the provider saw is an attempt row. A fault that strikes in the instant
    # between counting a call and sending it (a kill, Redis gone for the throttle) leaves a
    # counted call that never left: conservative, and only for the calls in flight then.
    assert report.attempt_rows >= report.provider_requests, report
    slack = report.in_flight_at_fault if fault_mid_call else 0
    assert report.attempt_rows - report.provider_requests <= slack, report
    assert report.max_calls_per_image <= sizes.max_attempts, report
    assert report.seconds_to_complete <= RECOVERY_SECONDS, report


def test_postgres_restart_mid_run_keeps_every_paid_result(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    report = scenarios.postgres_restart(deploy(latency_ms=(300, 900), seed=21), tmp_path, SMALL)
    assert report.succeeded == SMALL.items, report
    # The provider was reachable throughout: a paid answer is saved, never bought again.
    assert_clean(report, SMALL)


def test_postgres_away_for_a_while_costs_time_not_calls(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    report = scenarios.postgres_down(deploy(latency_ms=(300, 900), seed=22), tmp_path, SMALL)
    assert report.succeeded == SMALL.items, report
    assert_clean(report, SMALL)


def test_worker_killed_at_startup_strands_no_received_message(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    sizes = Sizes(items=40, slots=4, max_attempts=4)
    report = scenarios.sigkill_at_startup(deploy(latency_ms=(1500, 2500), seed=23), tmp_path, sizes)
    assert report.succeeded == sizes.items, report
    # Items whose message was received but not started carry no call: only the ones
    # running at the kill may have been paid for already.
    assert_clean(report, sizes, paid_twice_at_most=report.in_flight_at_fault, fault_mid_call=True)


def test_worker_killed_mid_run_gives_back_its_items_within_a_minute(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    sizes = Sizes(items=40, slots=6, max_attempts=4)
    report = scenarios.sigkill_mid_run(deploy(latency_ms=(300, 900), seed=3), tmp_path, sizes)
    assert report.succeeded == sizes.items, report
    assert_clean(report, sizes, paid_twice_at_most=report.in_flight_at_fault, fault_mid_call=True)


def test_sigterm_to_every_worker_then_restart_loses_and_doubles_nothing(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    sizes = Sizes(items=40, slots=8, max_attempts=4)
    report = scenarios.sigterm_and_restart(deploy(latency_ms=(300, 900), seed=24), tmp_path, sizes)
    assert report.succeeded == sizes.items, report
    # A warm shutdown finishes the calls it started: nothing is paid twice.
    assert_clean(report, sizes)


def test_redis_restarted_empty_costs_time_not_items(deploy: MakeDeployment, tmp_path: Path) -> None:
    sizes = Sizes(items=40, slots=4, max_attempts=4)
    with private_redis_server(tmp_path) as server:
        deployment = deploy(latency_ms=(200, 600), seed=9)
        report = scenarios.redis_restarted_empty(deployment, tmp_path, sizes, server)
    assert report.succeeded == sizes.items, report
    # Calls in flight when the broker died may be paid twice; nothing else.
    assert_clean(report, sizes, paid_twice_at_most=report.in_flight_at_fault, fault_mid_call=True)


def test_a_provider_outage_fails_no_item_and_the_fleet_recovers_fast(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    sizes = Sizes(items=40, slots=6, fault_seconds=40, max_attempts=8)  # the default attempts
    deployment = deploy(latency_ms=(100, 300), seed=25)
    report = scenarios.provider_outage(deployment, tmp_path, sizes)
    # The breaker paused the fleet: no item spent its attempts on the outage.
    assert report.succeeded == sizes.items, report
    assert_clean(report, sizes)
    assert report.seconds_to_complete <= 30 + 15, report  # back at full rate within ~30 s
    # Paused, not hammering: fewer failed calls than items during the whole outage.
    failed_calls = report.provider_requests - deployment.emulator.stats()["successes"]
    assert failed_calls < sizes.items, report


def test_a_provider_that_hangs_is_cut_at_the_deadline(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    sizes = Sizes(items=20, slots=4, max_attempts=8)
    deployment = deploy(latency_ms=(50, 150), seed=26)
    report = scenarios.provider_hangs(deployment, tmp_path, sizes)
    stats = deployment.emulator.stats()
    assert stats["hangs"] + stats["trickles"] > 0, stats
    assert report.lost == 0 and report.duplicate_results == 0, report
    assert report.attempt_rows == report.provider_requests, report
    assert report.max_calls_per_image <= sizes.max_attempts, report
    # A hung call costs its deadline, not a worker slot forever.
    assert report.succeeded + report.failed == sizes.items, report


def test_over_long_provider_fields_are_stored_and_calls_stay_bounded(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    sizes = Sizes(items=20, slots=4, max_attempts=3)
    deployment = deploy(latency_ms=(20, 60), seed=27)
    report = scenarios.overlong_fields(deployment, tmp_path, sizes)
    stats = deployment.emulator.stats()
    long_answers = stats["by_status"].get("500", 0)
    assert long_answers > 0, stats
    # Every call saved its attempt, the 300-character codes and request ids and the 5 MB
    # messages included (capped): no call went unrecorded, none was repeated past the limit.
    assert_clean(report, sizes)
    assert report.succeeded + report.failed == sizes.items, report
    with deployment.store.sessions() as session:
        errors = session.execute(
            select(Attempt.error_code, Attempt.request_id, Attempt.error_message).where(
                Attempt.http_status == 500
            )
        ).all()
    assert len(errors) == long_answers
    assert all(
        len(code or "") > 100 and len(request_id or "") > 100 for code, request_id, _ in errors
    )
    assert all(len(message or "") < 10_000 for _, _, message in errors)


def test_a_broker_blip_kills_no_call_in_flight(deploy: MakeDeployment, tmp_path: Path) -> None:
    sizes = Sizes(items=16, slots=4, max_attempts=4)
    report = scenarios.broker_blip(deploy(latency_ms=(1500, 2500), seed=28), tmp_path, sizes)
    assert report.succeeded == sizes.items, report
    # The calls in flight finished and were saved: none was cancelled and paid again.
    assert_clean(report, sizes)
