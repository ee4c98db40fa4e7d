"""Every way in makes the same batch: `qocr submit`, `qocr.Client.submit`, a Celery client
that knows only the broker URL (`send_task("qocr.submit")`), and a bare Redis LPUSH of the
message docs/producers.md documents. Real `qocr worker` processes, PostgreSQL, Redis."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from pydantic import SecretStr
from sqlalchemy import select

from qocr import Client
from qocr.api import NotFoundError
from qocr.models import Batch, BatchState, Item, Result
from qocr.settings import Settings
from tests.support.http_folder import serve_folder
from tests.support.images import png_bytes
from tests.support.pipeline import API_KEY, Deployment, MakeDeployment
from tests.support.processes import wait_until

pytestmark = pytest.mark.timeout(240)

REQUEST_COLUMNS = ("name", "api", "model", "task", "prompt", "result_schema", "options")
OPTIONS: dict[str, Any] = {"name": "invoices", "task": "multi_lan", "max_tokens": 700}


@pytest.fixture
def urls(tmp_path: Path) -> Iterator[list[str]]:
    www = tmp_path / "www"
    www.mkdir()
    for index in range(4):
        (www / f"scan-{index}.png").write_bytes(png_bytes(100 + index))
    with serve_folder(www) as base:
        yield [f"{base}/scan-{index}.png" for index in range(4)]


def made_by(deployment: Deployment, batch_id: int) -> dict[str, Any]:
    """What a batch is, whoever made it: its request and every source's result."""
    with deployment.store.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None
        rows = session.execute(
            select(Item.source, Item.state, Result.text)
            .outerjoin(Result, Result.item_id == Item.id)
            .where(Item.batch_id == batch_id)
        ).all()
        return {
            **{column: getattr(batch, column) for column in REQUEST_COLUMNS},
            "source_options": batch.source_options,
            "state": batch.state,
            "items": sorted((source, state.value, text) for source, state, text in rows),
        }


def redis_message(task_id: str, kwargs: dict[str, Any]) -> bytes:
    """The Celery message (protocol 2, JSON) as docs/producers.md writes it out."""
    body = [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": "qocr.submit",
            "id": task_id,
            "root_id": task_id,
            "parent_id": None,
            "group": None,
            "retries": 0,
            "eta": None,
            "expires": None,
            "timelimit": [None, None],
            "argsrepr": "()",
            "kwargsrepr": json.dumps(kwargs),
            "origin": "erp-export@host",
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "qocr.control"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope).encode()


def test_the_api_and_broker_only_producers_make_what_qocr_submit_makes(
    deploy: MakeDeployment, urls: list[str]
) -> None:
    deployment = deploy()
    settings = Settings(
        database_url=deployment.database_url,
        broker_url=deployment.broker_url,
        DASHSCOPE_API_KEY=SecretStr(API_KEY),
    )
    producer = Celery("erp-export", broker=deployment.broker_url)  # the broker URL, nothing else
    with deployment.worker(), Client(settings) as client:
        by_cli = deployment.submit(
            *urls, "--name", "invoices", "--task", "multi_lan", "--max-tokens", "700"
        )
        by_api = client.submit(urls, **OPTIONS).id
        producer.send_task(
            "qocr.submit",
            kwargs={"sources": urls, "options": OPTIONS, "idempotency_key": "erp-1"},
            queue="qocr.control",
        )
        raw_id = str(uuid.uuid4())
        message = {"sources": urls, "options": OPTIONS, "idempotency_key": "raw-1"}
        redis.Redis.from_url(deployment.broker_url).lpush(
            "qocr.control", redis_message(raw_id, message)
        )

        def keyed(key: str) -> int | None:
            try:
                batch = client.get_by_key(key).batch
            except NotFoundError:
                return None
            return None if batch is None else batch.id

        assert wait_until(lambda: keyed("erp-1") is not None and keyed("raw-1") is not None, 60)
        by_task, by_raw = keyed("erp-1"), keyed("raw-1")
        assert by_task is not None and by_raw is not None
        batches = [by_cli, by_api, by_task, by_raw]
        assert len(set(batches)) == 4
        for batch_id in batches:
            assert deployment.wait_finished(batch_id, 90), deployment.logs()[-3000:]
        assert wait_until(
            lambda: all(client.get(b).state == BatchState.COMPLETED for b in batches), 30
        )

        # The same message again (a producer's retry): the key holds, nothing is created.
        producer.send_task(
            "qocr.submit",
            kwargs={"sources": urls, "options": OPTIONS, "idempotency_key": "erp-1"},
            queue="qocr.control",
        )
        wait_until(lambda: False, 3)
        assert [b.id for b in client.recent()] == sorted(batches, reverse=True)
    producer.close()

    reference = made_by(deployment, by_cli)
    assert reference["state"] == BatchState.COMPLETED
    assert [state for _, state, _ in reference["items"]] == ["succeeded"] * 4
    for batch_id in (by_api, by_task, by_raw):
        assert made_by(deployment, batch_id) == reference


def test_a_bad_message_is_a_rejection_the_producer_can_look_up(
    deploy: MakeDeployment, urls: list[str]
) -> None:
    deployment = deploy()
    producer = Celery("erp-export", broker=deployment.broker_url)
    with deployment.worker():
        producer.send_task(
            "qocr.submit",
            kwargs={"sources": ["/etc/passwd"], "idempotency_key": "bad-1"},
            queue="qocr.control",
        )
        producer.send_task(
            "qocr.submit",
            kwargs={"sources": urls, "options": {"colour": "red"}, "idempotency_key": "bad-2"},
            queue="qocr.control",
        )
        assert wait_until(
            lambda: "bad-2" in deployment.logs() and "bad-1" in deployment.logs(), 60
        ), deployment.logs()[-3000:]
    producer.close()

    local = deployment.status("--key", "bad-1")
    assert local["batch"] is None and local["rejection"]["code"] == "source_not_allowed"
    assert "worker's disk" in local["rejection"]["message"]
    unknown = deployment.status("--key", "bad-2")
    assert unknown["rejection"]["code"] == "request_invalid"
    assert "colour" in unknown["rejection"]["message"]
    with deployment.store.sessions() as session:
        assert session.scalars(select(Batch.id)).all() == []
