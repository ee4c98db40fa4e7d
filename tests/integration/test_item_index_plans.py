"""Every query over a batch's items finds them through an index, never a scan of the table.

``items`` holds every batch ever submitted, so a scan costs what the whole history costs.
On PostgreSQL ``ix_items_batch_state_finished`` leaves out the items waiting in the queue
(``ix_items_undispatched`` holds those, migration 0013): a query about a batch's queued
items must ask both. Each statement the store and the reports send is explained with
sequential scans disabled, which PostgreSQL still shows when no index can answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from qocr.models.base import utcnow
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.reports import Reports
from qocr.models.store import Store
from tests.support.sql_capture import statements_during

SPEC = BatchSpec(name="plans", api="compatible", model="qwen-vl-ocr-latest", options={})
ITEMS = 3000


@pytest.fixture
def pg_engine(engine: Engine) -> Engine:
    if engine.dialect.name != "postgresql":
        pytest.skip("the plans checked are PostgreSQL's (SQLite keeps a full index)")
    return engine


def _spread(engine: Engine, batch_id: int) -> None:
    """The batch's items in every state an item passes through, most still waiting."""
    now = utcnow()
    steps = [
        ("state = 'queued', dispatched_at = :now", 0, 200),
        ("state = 'running', lease_until = :later", 200, 300),
        ("state = 'succeeded', finished_at = :now", 300, 800),
        ("state = 'failed', finished_at = :now, last_error_code = 'x'", 800, 900),
    ]
    with engine.begin() as conn:
        first = conn.execute(
            text("SELECT min(id) FROM items WHERE batch_id = :b"), {"b": batch_id}
        ).scalar_one()
        for assignment, start, stop in steps:
            conn.execute(
                text(f"UPDATE items SET {assignment} WHERE id >= :lo AND id < :hi"),
                {
                    "now": now,
                    "later": now + timedelta(minutes=1),
                    "lo": first + start,
                    "hi": first + stop,
                },
            )
        conn.execute(text("ANALYZE items"))


def _statements(engine: Engine, work: Callable[[], object]) -> list[tuple[str, Any]]:
    """What ``work`` asks of ``items`` (not the ANALYZE and SET around it)."""
    return [
        (statement, parameters)
        for statement, parameters in statements_during(engine, work)
        if "items" in statement and not statement.lstrip().upper().startswith(("ANALYZE", "SET"))
    ]


def _plans(engine: Engine, statements: list[tuple[str, Any]]) -> Iterator[str]:
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        cursor = driver.cursor()
        cursor.execute("SET enable_seqscan = off")
        for statement, parameters in statements:
            cursor.execute("EXPLAIN " + statement, parameters)
            yield "\n".join(row[0] for row in cursor.fetchall())
        conn.rollback()


def test_batch_queries_read_items_through_indexes(pg_engine: Engine) -> None:
    store = Store(pg_engine)
    reports = Reports(pg_engine)
    older, _ = store.create_batch(SPEC, (SourceRow(f"/old/{i}.png") for i in range(ITEMS)))
    batch, _ = store.create_batch(SPEC, (SourceRow(f"/new/{i}.png") for i in range(ITEMS)))
    _spread(pg_engine, older)
    _spread(pg_engine, batch)
    since = utcnow() - timedelta(minutes=5)
    work: dict[str, Callable[[], object]] = {
        "open": lambda: store.batch_is_open(batch),
        "complete": store.complete_finished_batches,
        "counts": lambda: reports.counts(batch),
        "finished since": lambda: reports.finished_since(batch, since),
        "requeueable": lambda: reports.requeueable(batch),
        "export": lambda: list(reports.iter_items(batch, page_size=1000)),
        "retry": lambda: store.requeue_failed(batch),
        "cancel": lambda: store.cancel_batch(batch),
        "submit, repeats and only_new": lambda: store.create_batch(
            replace(SPEC, schedule_name="nightly", only_new=True),
            (SourceRow(f"/n/{i % 500}.png") for i in range(ITEMS)),
        ),
    }
    deletes: list[str] = []
    for name, step in work.items():
        statements = _statements(pg_engine, step)
        assert statements, name
        for (statement, _), plan in zip(statements, _plans(pg_engine, statements), strict=True):
            assert "Seq Scan on items" not in plan, f"{name}:\n{plan}"
            if statement.startswith("DELETE FROM items"):
                deletes.append(plan)
    # The dedupe of the submit with repeats reads the batch once, then looks each repeat
    # up by key: a plan that reads the batch again per repeat (or per row) is quadratic.
    [dedupe] = deletes
    assert dedupe.count("Index Cond: (batch_id = ") == 1, dedupe
    assert "Index Scan using pk_items on items" in dedupe, dedupe
