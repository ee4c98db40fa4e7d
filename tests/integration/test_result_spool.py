"""Kept results: a paid answer whose save failed waits on disk and is saved once SQL answers."""

from __future__ import annotations

import fcntl
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from qocr.models import Item, ItemState, Result
from qocr.models.base import utcnow
from qocr.models.db import make_engine
from qocr.models.records import (
    AttemptRecord,
    BatchSpec,
    ClaimedItem,
    ResultRecord,
    SourceRow,
)
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store
from qocr.worker.result_spool import ResultSpool

SPEC = BatchSpec(name="t", api="compatible", model="qwen-vl-ocr-latest", options={"model": "m"})
RESULT = ResultRecord(
    text="INVOICE 42",
    kv_result={"total": "12.50"},
    words_info=[{"text": "INVOICE", "location": [1, 2, 3, 4, 5, 6, 7, 8]}],
    finish_reason="stop",
    request_id="req-1",
    model="qwen-vl-ocr-latest",
    input_tokens=100,
    output_tokens=5,
    total_tokens=105,
    latency_ms=812.5,
    image_sha256="ab" * 32,
)


def _called_item(store: Store) -> tuple[ClaimedItem, AttemptRecord]:
    store.create_batch(SPEC, [SourceRow("/img/a.png")])
    [item_id] = store.pick_for_dispatch(1)
    item = store.claim(item_id, "tok", utcnow() + timedelta(seconds=30))
    assert item is not None
    number = store.begin_call(item, utcnow(), "w1", max_attempts=8)
    now = utcnow()
    return item, AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, http_status=200, number=number)


def test_a_kept_result_is_saved_whole(engine: Engine, tmp_path: Path) -> None:
    store = Store(engine)
    item, attempt = _called_item(store)
    spool = ResultSpool(tmp_path / "spool", store, autostart=False)
    spool.keep(item, attempt, RESULT)
    assert spool.pending() == 1

    assert spool.save_all() == 1
    assert spool.pending() == 0
    with store.sessions() as session:
        result = session.scalars(select(Result)).one()
        assert (result.text, result.kv_result, result.total_tokens) == (
            "INVOICE 42",
            {"total": "12.50"},
            105,
        )
        assert result.words_info == RESULT.words_info
        row = session.get(Item, result.item_id)
        assert row is not None and row.state == ItemState.SUCCEEDED


def test_a_new_spool_on_the_same_folder_saves_what_a_dead_worker_kept(
    engine: Engine, tmp_path: Path
) -> None:
    store = Store(engine)
    item, attempt = _called_item(store)
    ResultSpool(tmp_path, store, autostart=False).keep(item, attempt, RESULT)
    successor = ResultSpool(tmp_path, store)
    assert successor.save_all() == 1


def test_a_result_being_saved_by_another_process_is_left_to_it(
    engine: Engine, tmp_path: Path
) -> None:
    store = Store(engine)
    item, attempt = _called_item(store)
    spool = ResultSpool(tmp_path, store, autostart=False)
    path = spool.keep(item, attempt, RESULT)
    with path.open() as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        assert spool.save_all() == 0
    assert spool.save_all() == 1


def test_while_the_database_is_away_the_result_stays_kept(tmp_path: Path) -> None:
    away = Store(make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none"))
    now = utcnow()
    attempt = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, number=1)
    item = ClaimedItem(7, 1, "/img/a.png", None, 0, "tok")
    spool = ResultSpool(tmp_path, away, autostart=False)
    spool.keep(item, attempt, RESULT)
    assert spool.save_all() == 0
    assert spool.pending() == 1
    away.engine.dispose()
