"""Reports over batches built by the real pipeline, on SQLite and PostgreSQL.

The batches are made by `qocr run` (embedded mode) against the emulator: a key information
extraction batch with a nested schema, a plain OCR batch with two unreadable files and a
flaky provider (retries), and a batch cut short by max_tokens. Every figure a report gives
is checked against the rows themselves.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from qocr.models import Attempt, ItemState
from qocr.models.db import make_engine
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.report_records import Usage
from qocr.models.reports import Reports
from qocr.models.states import BatchState
from qocr.models.store import Store
from tests.support.cli_batches import SCHEMA, Built, item_rows, pipeline_batches


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    with pipeline_batches(request.param, tmp_path_factory.mktemp("reports")) as batches:
        yield batches


@pytest.fixture
def reports(built: Built) -> Iterator[Reports]:
    engine = make_engine(built.url)
    yield Reports(engine)
    engine.dispose()


def test_the_pipeline_made_what_the_reports_are_checked_on(built: Built, reports: Reports) -> None:
    mixed = item_rows(reports, built.mixed)
    states = Counter(item.state for item, _ in mixed)
    assert states == {ItemState.SUCCEEDED: 3, ItemState.FAILED: 2}
    assert max(item.attempts for item, _ in mixed) > 1  # the flaky provider made retries
    cut = item_rows(reports, built.cut)
    assert [result.finish_reason for _, result in cut if result] == ["length"]


@pytest.mark.parametrize("which", ["kie", "mixed", "cut"])
def test_summary_matches_the_rows(built: Built, reports: Reports, which: str) -> None:
    batch_id = getattr(built, which)
    rows = item_rows(reports, batch_id)
    results = [result for _, result in rows if result is not None]

    summary = reports.summary(batch_id)

    assert summary is not None
    assert summary.batch.id == batch_id and summary.batch.name == which
    assert summary.batch.state == BatchState.COMPLETED
    assert summary.batch.total == len(rows)
    expected_counts = {state: 0 for state in ItemState}
    expected_counts.update(Counter(item.state for item, _ in rows))
    assert summary.counts == expected_counts
    assert summary.usage == Usage(
        sum(r.input_tokens for r in results),
        sum(r.output_tokens for r in results),
        sum(r.image_tokens for r in results),
        sum(r.total_tokens for r in results),
    )
    assert summary.usage.input_tokens > 0 and summary.usage.image_tokens > 0
    assert set(summary.usage_by_model) == {r.model for r in results}
    assert summary.finish_reasons == Counter(r.finish_reason for r in results)
    failed = [item for item, _ in rows if item.state in (ItemState.FAILED, ItemState.CANCELLED)]
    assert summary.errors == Counter(item.last_error_code for item in failed)


def test_error_codes_name_the_unreadable_files(built: Built, reports: Reports) -> None:
    summary = reports.summary(built.mixed)
    assert summary is not None
    assert summary.errors == {"image_empty": 1, "image_unsupported_format": 1}
    assert reports.requeueable(built.mixed) == 2
    assert reports.requeueable(built.mixed, ["image_empty"]) == 1
    assert reports.requeueable(built.mixed, ["no_such_code"]) == 0


def test_recent_batches_are_newest_first_with_their_counts(built: Built, reports: Reports) -> None:
    lines = reports.recent_batches(limit=10)
    assert [line.batch.id for line in lines] == [built.cut, built.mixed, built.kie]
    for line in lines:
        assert line.counts == reports.counts(line.batch.id)
        assert line.done == line.batch.total
    assert [line.batch.id for line in reports.recent_batches(limit=2)] == [built.cut, built.mixed]
    assert reports.recent_batches(limit=10, state=BatchState.CANCELLED) == []


def test_finished_since_counts_the_items_finished_after_a_moment(
    built: Built, reports: Reports
) -> None:
    moments = [item.finished_at for item, _ in item_rows(reports, built.mixed)]
    finished = sorted(moment for moment in moments if moment is not None)
    assert len(finished) == len(moments)  # the batch has ended: every item has a time
    middle = finished[len(finished) // 2]
    expected = sum(1 for moment in finished if moment >= middle)
    assert reports.finished_since(built.mixed, middle).finished == expected
    later = finished[-1] + timedelta(seconds=1)
    assert reports.finished_since(built.mixed, later).finished == 0


@pytest.mark.parametrize("page_size", [1, 2, 1000])
def test_iter_items_pages_through_every_item_by_id(
    built: Built, reports: Reports, page_size: int
) -> None:
    rows = item_rows(reports, built.mixed)
    exported = list(reports.iter_items(built.mixed, page_size=page_size))
    assert [row.id for row in exported] == [item.id for item, _ in rows]
    for row, (item, result) in zip(exported, rows, strict=True):
        assert (row.source, row.state, row.attempts) == (item.source, item.state, item.attempts)
        assert row.error_code == item.last_error_code
        if result is None:
            assert row.result is None
        else:
            assert row.result is not None
            assert row.result.text == result.text
            assert row.result.request_id == result.request_id
            assert row.result.usage.total_tokens == result.total_tokens


def test_iter_items_filters_by_state(built: Built, reports: Reports) -> None:
    failed = list(reports.iter_items(built.mixed, ItemState.FAILED, page_size=1))
    assert sorted(Path(row.source).name for row in failed) == ["empty.png", "notes.png"]
    assert all(row.result is None for row in failed)
    assert list(reports.iter_items(built.mixed, ItemState.CANCELLED)) == []


def test_iter_kv_results_reads_each_result_once(built: Built, reports: Reports) -> None:
    kv = list(reports.iter_kv_results(built.kie, page_size=2))
    expected = [result.kv_result for _, result in item_rows(reports, built.kie) if result]
    assert kv == expected and len(kv) == 3
    assert all(set(value) == set(SCHEMA) for value in kv)  # nesting kept by the pipeline
    assert all(set(value["seller"]) == {"name", "address"} for value in kv)


def test_an_item_comes_with_its_result_and_every_attempt(built: Built, reports: Reports) -> None:
    rows = item_rows(reports, built.mixed)
    item, result = max(rows, key=lambda pair: pair[0].attempts)
    detail = reports.item(item.id)
    assert detail is not None and result is not None
    assert detail.batch_name == "mixed"
    assert detail.item.result is not None and detail.item.result.text == result.text
    with reports.sessions() as session:
        attempts = session.scalars(
            select(Attempt).where(Attempt.item_id == item.id).order_by(Attempt.number)
        ).all()
    assert [a.number for a in detail.history] == [a.number for a in attempts]
    assert [a.outcome for a in detail.history] == [a.outcome for a in attempts]
    assert [a.error_code for a in detail.history] == [a.error_code for a in attempts]
    assert len(detail.history) == item.attempts > 1
    assert detail.history[-1].outcome == "succeeded"


def test_unknown_ids_are_none(reports: Reports) -> None:
    assert reports.batch(999_999) is None
    assert reports.summary(999_999) is None
    assert reports.item(999_999) is None
    assert list(reports.iter_items(999_999)) == []


def test_a_batch_with_nothing_done_yet(engine: Any) -> None:
    store = Store(engine)
    spec = BatchSpec(name="fresh", api="compatible", model="qwen-vl-ocr", options={})
    batch_id, _ = store.create_batch(spec, [SourceRow("/a.png"), SourceRow("/b.png")])
    summary = Reports(engine).summary(batch_id)
    assert summary is not None
    assert summary.counts[ItemState.QUEUED] == 2 and summary.usage == Usage()
    assert summary.finish_reasons == {} and summary.errors == {}
    assert summary.usage_by_model == {}
