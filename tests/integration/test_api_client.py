"""`qocr.Client` on SQLite and PostgreSQL: the same batch as `qocr submit`, idempotent submits
(sequential and racing), and the reads and controls the CLI is built on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import SecretStr
from sqlalchemy import func, select

from qocr import Client
from qocr.api import (
    BatchStatus,
    IdempotencyConflict,
    ItemResult,
    NotFoundError,
    RequestError,
    SourceError,
)
from qocr.cli import cli
from qocr.models import Batch, Item, ItemState
from qocr.models.db import make_engine
from qocr.models.documents import item_json
from qocr.models.reports import Reports
from qocr.models.states import BatchState
from qocr.settings import Settings, get_settings
from tests.support.images import write_pngs

KEY = "sk-api-client-test-0001"
# Columns of a batch row that say what it asks for (ids and times aside).
REQUEST_COLUMNS = ("name", "api", "model", "task", "prompt", "result_schema", "options")


@pytest.fixture
def settings(database_url: str) -> Settings:
    # A broker nobody listens on: `submit` saves the batch and says it is not dispatched yet.
    return Settings(
        database_url=database_url,
        broker_url="redis://127.0.0.1:1/0",
        DASHSCOPE_API_KEY=SecretStr(KEY),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings) as made:
        yield made


def batch_row(database_url: str, batch_id: int) -> dict[str, Any]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        row = conn.execute(select(Batch).where(Batch.id == batch_id)).mappings().one()
        items = conn.execute(
            select(Item.source, Item.fingerprint, Item.state).where(Item.batch_id == batch_id)
        ).all()
    engine.dispose()
    return {
        **{column: row[column] for column in REQUEST_COLUMNS},
        "items": sorted((source, fingerprint, state) for source, fingerprint, state in items),
    }


def cli_submit(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("QOCR_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("QOCR_BROKER_URL", settings.broker_url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["submit", "--json", *args])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return int(json.loads(result.output.strip().splitlines()[-1])["id"])


def test_submit_makes_the_batch_qocr_submit_makes(
    client: Client,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "scans"
    write_pngs(folder, 4)
    schema = {"number": "", "seller": {"name": ""}, "total": ""}
    (tmp_path / "schema.json").write_text(json.dumps(schema))

    batch = client.submit([str(folder)], schema=schema, max_tokens=900, top_k=3, name="n")
    by_cli = cli_submit(
        settings,
        monkeypatch,
        str(folder),
        "--schema",
        str(tmp_path / "schema.json"),
        "--max-tokens",
        "900",
        "--top-k",
        "3",
        "--name",
        "n",
    )

    assert batch.id != by_cli and (batch.total, batch.existing) == (4, False)
    assert batch.state == BatchState.RUNNING and batch.counts.queued == 4
    assert batch_row(database_url, batch.id) == batch_row(database_url, by_cli)
    assert list(batch_row(database_url, batch.id)["result_schema"]) == list(schema)


def test_the_same_key_and_request_give_the_first_batch_and_create_nothing(
    client: Client, database_url: str, tmp_path: Path
) -> None:
    write_pngs(tmp_path / "in", 3)
    first = client.submit([str(tmp_path / "in")], idempotency_key="nightly-1", task="multi_lan")
    # A relative path to the same folder is the same request.
    again = Client(client.settings)
    with pytest.MonkeyPatch.context() as env:
        env.chdir(tmp_path)
        second = again.submit(["in"], idempotency_key="nightly-1", task="multi_lan")
    again.close()

    assert (first.existing, second.existing) == (False, True)
    assert second.id == first.id and second.idempotency_key == "nightly-1"
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Batch)) == 1
        assert conn.scalar(select(func.count()).select_from(Item)) == 3
    engine.dispose()


def test_the_same_key_with_another_request_is_refused(client: Client, tmp_path: Path) -> None:
    write_pngs(tmp_path / "in", 2)
    first = client.submit([str(tmp_path / "in")], idempotency_key="k-2")

    with pytest.raises(IdempotencyConflict, match=f"batch {first.id}"):
        client.submit([str(tmp_path / "in")], idempotency_key="k-2", max_tokens=100)
    with pytest.raises(RequestError, match="unknown option"):
        client.submit([str(tmp_path / "in")], idempotency_key="k-3", colour="red")
    assert [batch.id for batch in client.recent()] == [first.id]


def test_two_submits_racing_with_one_key_make_one_batch(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serializes writers: no race to lose")
    write_pngs(tmp_path / "in", 300)
    barrier = threading.Barrier(2)
    made: list[Any] = []
    errors: list[BaseException] = []

    def submit() -> None:
        with Client(settings) as own:
            own.request([str(tmp_path / "in")])  # warm up: open the database first
            barrier.wait()
            try:
                made.append(own.submit([str(tmp_path / "in")], idempotency_key="race-1"))
            except BaseException as exc:  # collected for the assertion below
                errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == []
    assert len(made) == 2 and made[0].id == made[1].id
    assert sorted(batch.existing for batch in made) == [False, True]
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Batch)) == 1
        assert conn.scalar(select(func.count()).select_from(Item)) == 300
    engine.dispose()


def test_bad_sources_make_nothing(client: Client, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        client.submit([str(tmp_path / "missing.png")], idempotency_key="k-missing")
    with pytest.raises(NotFoundError, match="no submission with key 'k-missing'"):
        client.get_by_key("k-missing")
    assert client.recent() == []


def test_reads_and_controls_follow_the_cli_documents(
    client: Client, database_url: str, tmp_path: Path
) -> None:
    write_pngs(tmp_path / "in", 3)
    batch = client.submit(
        [str(tmp_path / "in")], notify="https://hooks.example.com/T0/B0/secret-path"
    )

    status = client.status(batch.id)
    assert isinstance(status, BatchStatus) and status.counts.queued == 3
    assert status.notify_url == "https://hooks.example.com/…"  # the path is a credential
    assert status.webhooks == ()
    assert BatchStatus.from_document(status.to_dict()) == status
    assert list(status.to_dict())[:3] == ["id", "name", "state"]

    results = list(client.results(batch.id))
    assert [type(result) for result in results] == [ItemResult] * 3
    reports = Reports(client.engine)
    assert [r.to_dict() for r in results] == [
        item_json(row, KEY) for row in reports.iter_items(batch.id)
    ]
    assert list(client.results(batch.id, state="succeeded")) == []

    cancelled = client.cancel(batch.id)
    assert (cancelled.state, cancelled.cancelled, cancelled.running) == (BatchState.CANCELLED, 3, 0)
    assert client.get(batch.id).counts.cancelled == 3
    retried = client.retry(batch.id, ["cancelled"])
    assert (retried.requeued, retried.state) == (3, BatchState.RUNNING)
    assert retried.to_dict() == {
        "id": batch.id,
        "requeued": 3,
        "codes": ["cancelled"],
        "state": "running",
    }
    assert client.get(batch.id).counts.queued == 3
    assert [r.state for r in client.results(batch.id)] == [ItemState.QUEUED] * 3

    for call in (client.get, client.status, client.cancel, client.retry, client.results):
        with pytest.raises(NotFoundError, match="no batch with id 999"):
            call(999)
