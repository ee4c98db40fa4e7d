"""A batch's items written in bulk (COPY on PostgreSQL, chunked executemany on SQLite).

Sources arrive from a stream (a manifest can hold millions): they must come out of the
database exactly as they went in, each once, in their order, with counts and tallies that
match the rows; and a stream that fails part-way must leave nothing behind.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, func, inspect, select

from qocr.models import Batch, Item, ItemState, new_items
from qocr.models.entities import source_digest
from qocr.models.new_items import SQLITE_CHUNK
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.store import Store
from qocr.scheduler.sources import SourceError, SourceExpander
from tests.support.sql_capture import statements_during

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SPEC = BatchSpec(name="bulk", api="compatible", model="qwen-vl-ocr-latest", options={})
# More rows than one executemany chunk, so chunk boundaries are crossed on SQLite.
MANY = SQLITE_CHUNK * 2 + 123
# What COPY's text format gives a meaning to (separators, escapes, its NULL marker and
# end-of-data line), and text outside ASCII.
AWKWARD_SOURCES = [
    "/scans/tab\there.png",
    "/scans/new\nline.png",
    "/scans/carriage\rreturn.png",
    "/scans/back\\slash.png",
    "\\N",
    "\\.",
    "/scans/ends with a backslash\\",
    "/scans/\\x41 \\t \\n \\\\ literal escapes.png",
    "/scans/quote\"s and 'apostrophes', commas.png",
    "/scans/ünïcödé/請求書-№7/🧾.png",
    "/scans/\u00a0no-break\u2028line-separator\u200bzero-width.png",
    " /scans/leading and trailing spaces.png ",
]
# A presigned URL of about 3 KB, as incompressible as a real token.
TOKEN = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(47))
LONG_URL = "https://bucket.s3.amazonaws.com/scan-{}.png?X-Amz-Security-Token=" + TOKEN


def _no_s3() -> S3Client:
    raise AssertionError("these sources never reach S3")


def _stored(store: Store, batch_id: int) -> list[tuple[str, str, str | None]]:
    """(source, source_sha256, fingerprint) of the batch's items, by id."""
    with store.sessions() as session:
        rows = session.execute(
            select(Item.source, Item.source_sha256, Item.fingerprint)
            .where(Item.batch_id == batch_id)
            .order_by(Item.id)
        )
        return [(source, digest, fingerprint) for source, digest, fingerprint in rows]


def _counts_agree(store: Store, batch_id: int, expected: int) -> None:
    """The batch's total, its tallies' queued count and a GROUP BY all say ``expected``."""
    with store.sessions() as session:
        by_state = (
            select(Item.state, func.count()).where(Item.batch_id == batch_id).group_by(Item.state)
        )
        grouped = dict(session.execute(by_state).all())
        batch = session.get(Batch, batch_id)
    assert grouped == {ItemState.QUEUED: expected}
    assert batch is not None and batch.total_items == expected
    counts = store.counts_by_state(batch_id)
    assert counts[ItemState.QUEUED] == expected
    assert sum(counts.values()) == expected


def _item_count(store: Store) -> tuple[int, int]:
    with store.sessions() as session:
        batches = session.scalar(select(func.count()).select_from(Batch))
        items = session.scalar(select(func.count()).select_from(Item))
    return int(batches or 0), int(items or 0)


def test_awkward_sources_come_back_exactly_as_submitted(engine: Engine) -> None:
    store = Store(engine)
    rows = [
        SourceRow(source, fingerprint=f"fp\t{index}\\\n")
        for index, source in enumerate(AWKWARD_SOURCES)
    ]
    batch_id, count = store.create_batch(SPEC, rows)
    assert count == len(AWKWARD_SOURCES)
    assert _stored(store, batch_id) == [
        (row.source, source_digest(row.source), row.fingerprint) for row in rows
    ]


def test_3kb_sources_are_stored_whole_and_kept_once(engine: Engine) -> None:
    store = Store(engine)
    sources = [LONG_URL.format(i) for i in range(50)]
    assert all(len(source) > 3_000 for source in sources)
    batch_id, count = store.create_batch(SPEC, (SourceRow(s) for s in sources + sources[:10]))
    assert count == 50
    assert [source for source, _, _ in _stored(store, batch_id)] == sources
    _counts_agree(store, batch_id, 50)


def test_duplicates_across_the_stream_are_kept_once_in_first_seen_order(engine: Engine) -> None:
    store = Store(engine)
    unique = [f"https://docs.example.com/{i:06d}.png" for i in range(MANY)]
    # Every seventh source again, some next to their first copy, most chunks later.
    stream = []
    for index, source in enumerate(unique):
        stream.append(source)
        if index % 7 == 0:
            stream.append(unique[index // 2])
    batch_id, count = store.create_batch(SPEC, (SourceRow(source) for source in stream))
    assert count == MANY
    assert [source for source, _, _ in _stored(store, batch_id)] == unique
    _counts_agree(store, batch_id, MANY)


def _ids_and_fingerprints(store: Store, batch_id: int) -> dict[str, tuple[int, str | None]]:
    with store.sessions() as session:
        rows = session.execute(
            select(Item.source, Item.id, Item.fingerprint).where(Item.batch_id == batch_id)
        )
        return {source: (item_id, fingerprint) for source, item_id, fingerprint in rows}


def test_a_source_listed_again_at_the_far_end_keeps_its_first_listing(
    engine: Engine, tmp_path: Path
) -> None:
    store = Store(engine)
    manifest = tmp_path / "manifest.txt"
    first = "https://docs.example.com/first.png"
    lines = [first, *(f"https://docs.example.com/{i}.png" for i in range(MANY)), first]
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch_id, count = store.create_batch(SPEC, SourceExpander(_no_s3).expand([f"@{manifest}"]))
    assert count == MANY + 1
    stored = _ids_and_fingerprints(store, batch_id)
    # Ids follow the manifest's order; the first listing is the batch's first item.
    ids = [stored[line][0] for line in lines[:-1]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == len(stored)
    assert stored[first][0] == ids[0]
    _counts_agree(store, batch_id, MANY + 1)


def _deletes_during(engine: Engine, work: Callable[[], object]) -> list[str]:
    """The DELETE statements ``work`` sends through ``engine``."""
    return [
        statement
        for statement, _ in statements_during(engine, work)
        if statement.lstrip().upper().startswith("DELETE")
    ]


def test_the_batch_is_searched_for_repeats_only_when_a_source_came_twice(engine: Engine) -> None:
    """The dedupe statement reads the whole batch (~1 s a million): not for distinct sources."""
    store = Store(engine)
    distinct = [f"/scan/{i}.png" for i in range(MANY)]
    assert _deletes_during(engine, lambda: store.create_batch(SPEC, map(SourceRow, distinct))) == []
    repeated = [*distinct[:50], distinct[7]]
    deletes = _deletes_during(engine, lambda: store.create_batch(SPEC, map(SourceRow, repeated)))
    assert len(deletes) == 1


def test_past_the_watched_sources_the_database_finds_the_repeats(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(new_items, "WATCHED_SOURCES", 100)
    store = Store(engine)
    unique = [f"/scan/{i}.png" for i in range(300)]
    # The repeats come after the watch stopped keeping digests: it cannot see them.
    stream = [*unique, *unique[150:160], *unique[:5]]
    batch_id, count = store.create_batch(SPEC, map(SourceRow, stream))
    assert count == 300
    assert [source for source, _, _ in _stored(store, batch_id)] == unique
    _counts_agree(store, batch_id, 300)


def test_a_maybe_without_a_repeat_deletes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a hash collision does: the database looks, finds no repeat, and keeps every item."""
    monkeypatch.setattr(new_items, "WATCHED_SOURCES", 0)
    store = Store(engine)
    unique = [f"/scan/{i}.png" for i in range(MANY)]
    made: list[tuple[int, int]] = []
    deletes = _deletes_during(
        engine, lambda: made.append(store.create_batch(SPEC, map(SourceRow, unique)))
    )
    assert len(deletes) == 1
    [(batch_id, count)] = made
    assert count == MANY
    assert [source for source, _, _ in _stored(store, batch_id)] == unique
    _counts_agree(store, batch_id, MANY)


def test_the_repeat_watch_is_exact_below_its_limit_and_maybe_above() -> None:
    watch = new_items.RepeatWatch(3)
    for digest in map(source_digest, ["/a", "/b", "/c"]):
        watch.see(digest)
    assert not watch.maybe_repeated
    watch.see(source_digest("/a"))
    assert watch.maybe_repeated
    full = new_items.RepeatWatch(2)
    for digest in map(source_digest, ["/a", "/b", "/c"]):
        full.see(digest)
    assert full.maybe_repeated


def test_the_first_listing_keeps_its_fingerprint(engine: Engine) -> None:
    store = Store(engine)
    rows = [SourceRow("/a.png", "etag-1"), SourceRow("/b.png"), SourceRow("/a.png", "etag-2")]
    batch_id, count = store.create_batch(SPEC, rows)
    assert count == 2
    assert _stored(store, batch_id) == [
        ("/a.png", source_digest("/a.png"), "etag-1"),
        ("/b.png", source_digest("/b.png"), None),
    ]


def test_items_have_no_foreign_key_nor_unique_source_index(engine: Engine) -> None:
    """Migration 0011: COPY pays no per-row trigger or random btree insert."""
    inspector = inspect(engine)
    assert inspector.get_foreign_keys("items") == []
    assert inspector.get_unique_constraints("items") == []
    unique = [index["name"] for index in inspector.get_indexes("items") if index["unique"]]
    assert unique == ["ux_items_parent_page"]


def test_a_batch_with_every_source_twice_counts_each_once(engine: Engine) -> None:
    store = Store(engine)
    sources = [f"/img/{i}.png" for i in range(100)]
    batch_id, count = store.create_batch(SPEC, (SourceRow(s) for s in sources * 3))
    assert count == 100
    assert [source for source, _, _ in _stored(store, batch_id)] == sources
    _counts_agree(store, batch_id, 100)


def test_the_same_source_in_two_batches_is_an_item_of_each(engine: Engine) -> None:
    store = Store(engine)
    rows = [SourceRow("/a.png"), SourceRow("/b.png")]
    first, _ = store.create_batch(SPEC, rows)
    second, count = store.create_batch(SPEC, rows)
    assert count == 2
    _counts_agree(store, first, 2)
    _counts_agree(store, second, 2)


def test_a_stream_failing_after_many_rows_leaves_nothing(engine: Engine) -> None:
    store = Store(engine)
    failure = SourceError("no such file: /x.png", code="source_not_found", where="m.txt:9000")

    def rows() -> Iterator[SourceRow]:
        for index in range(MANY):
            yield SourceRow(f"/img/{index}.png")
        raise failure

    with pytest.raises(SourceError) as raised:
        store.create_batch(SPEC, rows())
    assert raised.value is failure  # the stream's own error, not a database one
    assert _item_count(store) == (0, 0)
    # The connection went back to the pool clean: the next batch is whole.
    batch_id, count = store.create_batch(SPEC, (SourceRow(f"/img/{i}.png") for i in range(10)))
    assert count == 10
    _counts_agree(store, batch_id, 10)


def test_a_manifest_with_a_bad_line_far_down_makes_no_batch(engine: Engine, tmp_path: Path) -> None:
    store = Store(engine)
    manifest = tmp_path / "manifest.txt"
    lines = [f"https://docs.example.com/{i}.png" for i in range(MANY)]
    lines.append("ftp://docs.example.com/bad.png")
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expander = SourceExpander(_no_s3)
    with pytest.raises(SourceError, match=f"manifest.txt:{MANY + 1}: unknown scheme"):
        store.create_batch(SPEC, expander.expand([f"@{manifest}"]))
    assert _item_count(store) == (0, 0)


def test_a_long_stream_is_written_without_being_held_in_memory(engine: Engine) -> None:
    store = Store(engine)
    rows = 60_000
    padding = "p" * 200

    def stream() -> Iterator[SourceRow]:
        for index in range(rows):
            yield SourceRow(f"https://docs.example.com/{padding}/{index}.png", f"etag-{index}")

    tracemalloc.start()
    try:
        batch_id, count = store.create_batch(SPEC, stream())
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == rows
    _counts_agree(store, batch_id, rows)
    # Held at once, these rows would take well over 30 MB (sources, digests, rows).
    assert peak_bytes < 12 * 1024 * 1024, peak_bytes
