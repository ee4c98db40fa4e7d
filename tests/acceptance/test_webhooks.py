"""Completion webhooks with real `qocr worker` processes and a real HTTP receiver: a worker
killed mid-delivery, and a receiver that is down for a while, still give exactly one
accepted, correctly signed delivery per batch end."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from qocr.api import verify_signature
from qocr.models.webhooks import DeliveryState, WebhookStore
from qocr.scheduler.notify import LEASE_SECONDS
from tests.support.images import write_pngs
from tests.support.pipeline import Deployment, MakeDeployment
from tests.support.processes import QOCR, kill_hard, wait_until
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.timeout(300)

SECRET = "whsec-acceptance-0001"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as made:
        yield made


def submit_with_webhook(deployment: Deployment, tmp_path: Path, url: str) -> int:
    write_pngs(tmp_path / "scans", 3)
    return deployment.submit(str(tmp_path / "scans"), "--notify", url)


def delivery_states(deployment: Deployment, batch_id: int) -> list[DeliveryState]:
    return [d.state for d in WebhookStore(deployment.store.engine).for_batch(batch_id)]


def assert_signed(receiver: WebhookReceiver, batch_id: int) -> None:
    for request in receiver.requests:
        verify_signature(SECRET, request.headers["X-Qocr-Signature"], request.body)
        assert json.loads(request.body)["id"] == batch_id
    assert len({request.delivery_id for request in receiver.requests}) == 1


def test_a_worker_killed_mid_delivery_still_gives_exactly_one_accepted_delivery(
    deploy: MakeDeployment, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    deployment = deploy()
    deployment.extra_env["QOCR_WEBHOOK_SECRET"] = SECRET
    receiver.script.hold_next = 1  # the first POST is left unanswered...
    with deployment.worker(name="first") as first:
        batch_id = submit_with_webhook(deployment, tmp_path, receiver.url)
        assert receiver.script.arrived.wait(90), deployment.logs()[-3000:]
        kill_hard(first)  # ...and its sender dies while the receiver holds it
    receiver.script.released.set()
    assert delivery_states(deployment, batch_id) == [DeliveryState.PENDING]

    with deployment.worker(name="second"):
        # The dead sender's lease runs out; the next dispatcher sends the delivery again.
        assert wait_until(
            lambda: delivery_states(deployment, batch_id) == [DeliveryState.DELIVERED],
            LEASE_SECONDS + 60,
        ), deployment.logs()[-3000:]
        wait_until(lambda: False, 3)  # nothing more arrives

    assert [request.status for request in receiver.requests] == [None, 200]
    assert len(receiver.accepted()) == 1
    assert_signed(receiver, batch_id)
    [delivery] = deployment.status(str(batch_id))["webhooks"]
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 2)
    assert delivery["delivery_id"] == receiver.requests[0].delivery_id
    assert json.loads(receiver.requests[1].body)["state"] == "completed"


def test_a_receiver_down_for_a_while_gets_the_delivery_once_it_is_back(
    deploy: MakeDeployment, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    deployment = deploy()
    deployment.extra_env["QOCR_WEBHOOK_SECRET"] = SECRET
    receiver.stop()
    with deployment.worker():
        batch_id = submit_with_webhook(deployment, tmp_path, receiver.url)
        assert deployment.wait_finished(batch_id, 60)

        def failed_attempts() -> int:
            found = WebhookStore(deployment.store.engine).for_batch(batch_id)
            if not found or found[-1].last_error is None:
                return 0
            return found[-1].attempts

        assert wait_until(lambda: failed_attempts() >= 2, 60), deployment.logs()[-3000:]
        receiver.start()
        assert wait_until(
            lambda: delivery_states(deployment, batch_id) == [DeliveryState.DELIVERED], 60
        ), deployment.logs()[-3000:]
        wait_until(lambda: False, 3)

    assert len(receiver.requests) == len(receiver.accepted()) == 1
    assert_signed(receiver, batch_id)
    [delivery] = deployment.status(str(batch_id))["webhooks"]
    assert delivery["state"] == "delivered" and delivery["attempts"] >= 3
    assert delivery["url"] == f"http://127.0.0.1:{receiver.port}/…"
    shown = subprocess.run(
        [*QOCR, "status", str(batch_id)],
        env=deployment.env(),
        cwd=deployment.tmp,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "Webhook" in shown and "delivered" in shown and "receiver-secret" not in shown
