"""Completion webhooks against a real HTTP receiver on loopback, on SQLite and PostgreSQL:
signed once per batch end, retried while the receiver is away, taken over after a lease."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from qocr import Client
from qocr.api import verify_signature
from qocr.emulator.testing import running_emulator
from qocr.models.base import utcnow
from qocr.models.db import make_engine
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.states import BatchState
from qocr.models.store import Store
from qocr.models.webhooks import DeliveryInfo, DeliveryState, WebhookDelivery, WebhookStore
from qocr.scheduler.notify import RETRY_HORIZON, Notifier
from qocr.settings import Settings
from tests.support.images import write_pngs
from tests.support.processes import wait_until
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec-integration-0001"
KEY = "sk-webhooks-test-0001"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    made = Store(make_engine(database_url))
    yield made
    made.engine.dispose()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as made:
        yield made


def settings_for(database_url: str, secret: str | None = SECRET) -> Settings:
    return Settings(
        database_url=database_url,
        webhook_secret=SecretStr(secret) if secret else None,
        DASHSCOPE_API_KEY=SecretStr(KEY),
        config="no-such-qocr.toml",
    )


@pytest.fixture
def notifier(store: Store, database_url: str) -> Iterator[Notifier]:
    made = Notifier.from_settings(settings_for(database_url), store.engine)
    yield made
    made.close()


def ended_batch(store: Store, url: str, items: int = 2) -> int:
    spec = BatchSpec(
        name="invoices",
        api="compatible",
        model="qwen-vl-ocr",
        options={"model": "qwen-vl-ocr"},
        notify_url=url,
    )
    rows = [SourceRow(f"https://example.com/{n}.png") for n in range(items)]
    batch_id, _ = store.create_batch(spec, rows)
    store.cancel_batch(batch_id)
    return batch_id


def deliveries(store: Store, batch_id: int) -> list[DeliveryState]:
    return [d.state for d in WebhookStore(store.engine).for_batch(batch_id)]


def make_due(store: Store) -> None:
    """Time passes: every pending delivery is due now."""
    with store.engine.begin() as conn:
        conn.execute(update(WebhookDelivery).values(next_attempt_at=utcnow()))


def test_an_ended_batch_is_posted_once_signed_with_its_status_document(
    store: Store, notifier: Notifier, receiver: WebhookReceiver, database_url: str
) -> None:
    batch_id = ended_batch(store, receiver.url)

    notifier.tick()
    assert wait_until(lambda: deliveries(store, batch_id) == [DeliveryState.DELIVERED], 10)
    for _ in range(3):
        notifier.tick()  # an end is announced once, however often the tick runs

    [request] = receiver.requests
    assert request.accepted
    headers = request.headers
    assert verify_signature(SECRET, headers["X-Qocr-Signature"], request.body) > 0
    assert headers["X-Qocr-Event"] == "batch.cancelled" and headers["X-Qocr-Attempt"] == "1"
    assert headers["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert (body["id"], body["state"], body["counts"]["cancelled"]) == (batch_id, "cancelled", 2)
    with Client(settings_for(database_url)) as client:
        status = client.status(batch_id)
    assert body["notify_url"] == status.notify_url == f"http://127.0.0.1:{receiver.port}/…"
    [delivery] = status.webhooks
    assert delivery.delivery_id == headers["X-Qocr-Delivery"]
    assert (delivery.state, delivery.attempts, delivery.last_http_status) == ("delivered", 1, 200)
    assert "receiver-secret" not in json.dumps(status.to_dict())


def test_a_receiver_that_is_down_gets_the_delivery_once_it_is_back(
    store: Store, notifier: Notifier, receiver: WebhookReceiver
) -> None:
    receiver.stop()
    batch_id = ended_batch(store, receiver.url)

    notifier.tick()
    assert wait_until(lambda: _last(store, batch_id).last_error is not None, 10)
    failed = _last(store, batch_id)
    assert failed.state == DeliveryState.PENDING and failed.last_error == "ConnectError (no answer)"
    assert failed.next_attempt_at is not None and failed.next_attempt_at > utcnow()
    notifier.tick()  # not due yet: nothing is sent
    receiver.script.statuses = [503]
    receiver.start()
    make_due(store)
    notifier.tick()
    assert wait_until(lambda: _last(store, batch_id).last_http_status == 503, 10)
    assert deliveries(store, batch_id) == [DeliveryState.PENDING]  # 503: tried again later
    make_due(store)
    notifier.tick()

    assert wait_until(lambda: deliveries(store, batch_id) == [DeliveryState.DELIVERED], 10)
    assert [r.status for r in receiver.requests] == [503, 200]
    assert len({r.delivery_id for r in receiver.requests}) == 1
    assert _attempts(store, batch_id) == 3


def test_a_delivery_leased_by_a_dead_sender_is_sent_again_after_its_lease(
    store: Store, notifier: Notifier, receiver: WebhookReceiver
) -> None:
    batch_id = ended_batch(store, receiver.url)
    webhooks = WebhookStore(store.engine)
    notifier.enqueue_ended()
    # Another sender claims it and dies before it records anything.
    [claimed] = webhooks.claim_due(5, utcnow() + timedelta(seconds=60))

    notifier.tick()
    assert receiver.requests == [] and webhooks.claim_due(5, utcnow()) == []
    with store.engine.begin() as conn:
        conn.execute(update(WebhookDelivery).values(lease_until=utcnow() - timedelta(seconds=1)))
    notifier.tick()

    assert wait_until(lambda: deliveries(store, batch_id) == [DeliveryState.DELIVERED], 10)
    assert len(receiver.accepted()) == 1 and _attempts(store, batch_id) == 2
    assert not webhooks.mark_delivered(claimed, 200)  # the dead sender's token holds nothing


def test_without_a_secret_nothing_is_sent_and_the_reason_is_recorded(
    store: Store, receiver: WebhookReceiver, database_url: str
) -> None:
    unsigned = Notifier.from_settings(settings_for(database_url, secret=None), store.engine)
    batch_id = ended_batch(store, receiver.url)
    unsigned.tick()
    assert wait_until(lambda: _last(store, batch_id).last_error is not None, 10)
    unsigned.close()

    [delivery] = WebhookStore(store.engine).for_batch(batch_id)
    assert receiver.requests == []
    assert delivery.state == DeliveryState.PENDING
    assert delivery.last_error is not None and "QOCR_WEBHOOK_SECRET" in delivery.last_error


def test_a_delivery_is_given_up_a_day_after_the_end(
    store: Store, notifier: Notifier, receiver: WebhookReceiver
) -> None:
    receiver.script.statuses = [500, 500]
    batch_id = ended_batch(store, receiver.url)
    notifier.enqueue_ended()
    with store.engine.begin() as conn:
        old = utcnow() - RETRY_HORIZON - timedelta(minutes=1)
        conn.execute(update(WebhookDelivery).values(created_at=old))
    notifier.tick()

    assert wait_until(lambda: deliveries(store, batch_id) == [DeliveryState.FAILED], 10)
    make_due(store)
    notifier.tick()
    assert len(receiver.requests) == 1


def test_a_batch_retried_and_ended_again_is_announced_again(
    store: Store, notifier: Notifier, receiver: WebhookReceiver
) -> None:
    batch_id = ended_batch(store, receiver.url)
    notifier.tick()
    assert wait_until(lambda: deliveries(store, batch_id) == [DeliveryState.DELIVERED], 10)

    assert store.requeue_failed(batch_id) == 2
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.state == BatchState.RUNNING
    notifier.tick()
    assert len(receiver.requests) == 1  # running: nothing to announce
    store.stop_batch(batch_id, "InvalidApiKey: no", code="batch_stopped")
    notifier.tick()

    assert wait_until(lambda: len(deliveries(store, batch_id)) == 2, 10)
    assert wait_until(lambda: len(receiver.accepted()) == 2, 10)
    events = [r.headers["X-Qocr-Event"] for r in receiver.requests]
    assert events == ["batch.cancelled", "batch.stopped"]
    assert len({r.delivery_id for r in receiver.requests}) == 2


def _last(store: Store, batch_id: int) -> DeliveryInfo:
    return WebhookStore(store.engine).for_batch(batch_id)[-1]


def _attempts(store: Store, batch_id: int) -> int:
    return sum(d.attempts for d in WebhookStore(store.engine).for_batch(batch_id))


def test_qocr_run_posts_its_batch_end_itself(
    receiver: WebhookReceiver, database_url: str, tmp_path: Path
) -> None:
    write_pngs(tmp_path / "in", 2)
    with running_emulator(recognizer="hash") as emulator:
        settings = settings_for(database_url).model_copy(update={"base_url": emulator.base_url})
        with Client(settings) as client:
            batch = client.run([str(tmp_path / "in")], notify=receiver.url, concurrency=2)
            status = client.status(batch.id)

    assert batch.state == BatchState.COMPLETED and batch.counts.succeeded == 2
    [request] = receiver.accepted()
    assert verify_signature(SECRET, request.headers["X-Qocr-Signature"], request.body) > 0
    assert json.loads(request.body)["state"] == "completed"
    assert [d.state for d in status.webhooks] == ["delivered"]
