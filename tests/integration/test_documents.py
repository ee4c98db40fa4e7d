"""Documents (PDF, TIFF) at the worker: expanded into page items in one transaction, pages
rendered and called like images, bad documents failed with their codes, results merged by
document. Real SQL (SQLite and PostgreSQL), real PDFium, a scripted service."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select

from qocr.models import BatchState, Item, ItemState
from qocr.models.base import utcnow
from qocr.models.document_pages import (
    DocumentPages,
    Expansion,
    page_digest,
    page_source,
)
from qocr.models.document_reports import DocumentReports, merge_document
from qocr.models.records import BatchSpec, ClaimedItem, SourceRow
from qocr.models.store import Store
from qocr.models.tallies import TallyKind, read_tallies
from qocr.qwen.client import QwenOCRClient
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.tokens import image_tokens
from qocr.s3 import make_s3_client
from qocr.scheduler.document_options import document_options
from qocr.settings import load_settings
from qocr.worker.document_files import DocumentFiles
from qocr.worker.documents import DocumentRunner, PageImage
from qocr.worker.estimates import TokenEstimator
from qocr.worker.fetch import FetchError, ImageFetcher
from qocr.worker.process import ItemProcessor, Outcome
from qocr.worker.runtime import memory_runtime
from tests.support.documents import (
    corrupt_pdf_bytes,
    empty_pdf_bytes,
    encrypted_pdf_bytes,
    pdf_bytes,
    tiff_bytes,
    write,
)
from tests.support.http_folder import serve_folder
from tests.support.images import png_bytes

MODEL = "qwen-vl-ocr-latest"


def answer(request: httpx.Request) -> httpx.Response:
    """The service: a key-value answer naming the page it was given (by its size)."""
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": f"read {len(request.content)}"},
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42},
    }
    return httpx.Response(200, json=body)


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return answer(request)


class Make(Protocol):
    def __call__(
        self, sources: list[str], **batch: Any
    ) -> tuple[ItemProcessor, Store, Counter, int]: ...


@pytest.fixture
def setup(engine: Engine, tmp_path: Path, s3_endpoint: str) -> Iterator[Make]:
    processors: list[ItemProcessor] = []

    def make(
        sources: list[str], max_pixels: int | None = 300_000, **document: Any
    ) -> tuple[ItemProcessor, Store, Counter, int]:
        settings = load_settings(
            DASHSCOPE_API_KEY="sk-x",
            max_attempts=4,
            base_url="http://svc",
            s3_endpoint_url=s3_endpoint,
        )
        store = Store(engine)
        options = RecognizeOptions(model=MODEL, max_pixels=max_pixels)
        spec = BatchSpec(
            name="docs",
            api="compatible",
            model=MODEL,
            options=options.to_dict(),
            source_options={"s3_mode": "inline", **document_options(**document).source_options()},
        )
        batch_id, _ = store.create_batch(spec, (SourceRow(source, "f-1") for source in sources))
        runtime = memory_runtime(settings, store)
        counter = Counter()
        runtime._clients["compatible"] = QwenOCRClient(
            "sk-x", base_url="http://svc", transport=httpx.MockTransport(counter)
        )
        files = DocumentFiles(runtime.fetcher, tmp_path / "document-cache", 30.0)
        runtime.__dict__["documents"] = DocumentRunner(DocumentPages(engine), files)
        processor = ItemProcessor(runtime, sleep=lambda seconds: None)
        processors.append(processor)
        return processor, store, counter, batch_id

    yield make
    for processor in processors:
        processor.rt.close()


def run_all(processor: ItemProcessor, store: Store) -> dict[int, Outcome]:
    """Process every due item (pages included, as they appear) until none is left."""
    outcomes: dict[int, Outcome] = {}
    while item_ids := store.pick_for_dispatch(100):
        for item_id in item_ids:
            outcomes[item_id] = processor.process(item_id)
    return outcomes


def items(store: Store, batch_id: int) -> list[Item]:
    with store.sessions() as session:
        return list(
            session.scalars(select(Item).where(Item.batch_id == batch_id).order_by(Item.id))
        )


def test_documents_become_pages_that_are_called_like_images(setup: Make, tmp_path: Path) -> None:
    pdf = write(tmp_path / "in" / "invoice.pdf", pdf_bytes(3, "invoice"))
    tiff = write(tmp_path / "in" / "scan.tif", tiff_bytes(2, "scan"))
    png = write(tmp_path / "in" / "photo.png", png_bytes(7))
    processor, store, counter, batch_id = setup([str(pdf), str(tiff), str(png)])

    outcomes = run_all(processor, store)

    assert sorted(outcomes.values()).count(Outcome.EXPANDED) == 2
    assert list(outcomes.values()).count(Outcome.SUCCEEDED) == 6
    assert counter.calls == 6  # 3 + 2 pages and the image: the documents cost no call
    rows = items(store, batch_id)
    documents = {row.source: row for row in rows if row.parent_item_id is None}
    assert documents[str(pdf)].state == ItemState.EXPANDED
    assert documents[str(tiff)].state == ItemState.EXPANDED
    assert documents[str(png)].state == ItemState.SUCCEEDED
    pages = [row for row in rows if row.parent_item_id is not None]
    assert sorted((row.source, row.page) for row in pages) == sorted(
        [(page_source(str(pdf), n), n) for n in (1, 2, 3)]
        + [(page_source(str(tiff), n), n) for n in (1, 2)]
    )
    for row in pages:
        parent = documents[row.source.rsplit("#", 1)[0]]
        assert row.parent_item_id == parent.id and row.fingerprint == parent.fingerprint
        assert row.state == ItemState.SUCCEEDED
    counts = store.counts_by_state(batch_id)
    assert counts[ItemState.SUCCEEDED] == 6 and counts[ItemState.EXPANDED] == 2
    assert counts[ItemState.QUEUED] == counts[ItemState.RUNNING] == 0
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.total_items == 8
    with store.sessions() as session:
        assert read_tallies(session, [batch_id])[batch_id][(TallyKind.PAGES, "")] == 5
    assert store.complete_finished_batches() == [batch_id]


def test_results_by_document_give_one_record_per_source_with_pages_in_order(
    setup: Make, tmp_path: Path
) -> None:
    pdf = write(tmp_path / "invoice.pdf", pdf_bytes(3, "invoice"))
    png = write(tmp_path / "photo.png", png_bytes(7))
    processor, store, _, batch_id = setup([str(pdf), str(png)])
    run_all(processor, store)

    documents = list(DocumentReports(store.engine).iter_documents(batch_id, page_size=1))
    assert [rows.document.source for rows in documents] == [str(pdf), str(png)]
    first, second = documents
    assert [row.page for row in first.pages] == [1, 2, 3]
    assert [row.page for row in second.pages] == [None]  # an image is its own page
    merged = merge_document(first)
    assert merged.state == ItemState.SUCCEEDED
    assert merged.text is not None and len(merged.text.split("\f")) == 3
    assert merged.usage.total_tokens == 3 * 42
    assert DocumentReports(store.engine).pages_of(first.document.id) == first.pages


def test_an_expansion_happens_once_and_only_under_its_lease(setup: Make, tmp_path: Path) -> None:
    pdf = write(tmp_path / "invoice.pdf", pdf_bytes(3))
    _, store, _, batch_id = setup([str(pdf)])
    [item_id] = store.pick_for_dispatch(10)
    held = store.claim(item_id, "a" * 32, utcnow())
    assert held is not None
    pages = DocumentPages(store.engine)
    # A page left by an earlier try is kept, not added again, nor counted twice.
    with store.engine.begin() as conn:
        conn.execute(
            insert(Item).values(
                batch_id=batch_id,
                source=page_source(held.source, 2),
                source_sha256=page_digest(item_id, 2),
                state=ItemState.QUEUED,
                attempts=0,
                parent_item_id=item_id,
                page=2,
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    stale = ClaimedItem(item_id, batch_id, held.source, held.fingerprint, 0, "b" * 32)
    assert pages.expand(stale, [1, 2, 3]).outcome is Expansion.LEASE_LOST
    result = pages.expand(held, [1, 2, 3])
    assert (result.outcome, result.pages_added) == (Expansion.EXPANDED, 2)
    assert pages.expand(held, [1, 2, 3]).outcome is Expansion.LEASE_LOST  # done already
    with store.sessions() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(Item).where(Item.parent_item_id == item_id)
            )
            == 3
        )
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.total_items == 1 + 2
    assert pages.page_of(item_id) is None
    page_ids = store.pick_for_dispatch(10)
    assert {pages.page_of(page_id).page for page_id in page_ids} == {1, 2, 3}  # type: ignore[union-attr]


def test_documents_of_one_batch_expand_at_once_without_deadlock(
    setup: Make, tmp_path: Path
) -> None:
    # Each expansion reads the batch row, then adds its pages to the batch's total: two
    # that both held a shared lock on the row while waiting to update it deadlocked (an
    # invoice run is many PDFs, expanded by many threads at once).
    documents = [str(write(tmp_path / f"doc-{n}.pdf", pdf_bytes(2))) for n in range(12)]
    _, store, _, batch_id = setup(documents)
    item_ids = store.pick_for_dispatch(20)
    held = [store.claim(item_id, f"{item_id:032d}", utcnow()) for item_id in item_ids]
    pages = DocumentPages(store.engine)
    start = threading.Barrier(len(held))

    def expand(item: ClaimedItem | None) -> Expansion:
        assert item is not None
        start.wait()
        return pages.expand(item, [1, 2]).outcome

    with ThreadPoolExecutor(len(held)) as pool:
        outcomes = list(pool.map(expand, held))
    assert outcomes == [Expansion.EXPANDED] * len(documents)
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.total_items == len(documents) * 3


def test_a_document_of_a_cancelled_batch_adds_no_page(setup: Make, tmp_path: Path) -> None:
    pdf = write(tmp_path / "invoice.pdf", pdf_bytes(2))
    _, store, counter, batch_id = setup([str(pdf)])
    [item_id] = store.pick_for_dispatch(10)
    held = store.claim(item_id, "a" * 32, utcnow())
    assert held is not None
    store.cancel_batch(batch_id)  # while a worker holds the document
    result = DocumentPages(store.engine).expand(held, [1, 2])
    assert result.outcome is Expansion.CANCELLED
    [row] = items(store, batch_id)
    assert (row.state, row.last_error_code) == (ItemState.CANCELLED, "cancelled")
    counts = store.counts_by_state(batch_id)
    assert counts[ItemState.CANCELLED] == 1 and sum(counts.values()) == 1
    assert counter.calls == 0


@pytest.mark.parametrize(
    ("data", "options", "code", "good_page"),
    [
        (encrypted_pdf_bytes(), {}, "document_encrypted", 1),
        (corrupt_pdf_bytes(), {}, "document_corrupt", 1),
        (empty_pdf_bytes(), {}, "document_empty", 1),
        (pdf_bytes(4), {"max_pages": 3}, "document_too_many_pages", 1),
        (pdf_bytes(2), {"pages": "5-"}, "document_empty", 5),
    ],
)
def test_a_document_that_cannot_be_read_fails_with_its_code(
    setup: Make,
    tmp_path: Path,
    data: bytes,
    options: dict[str, Any],
    code: str,
    good_page: int,
) -> None:
    bad = write(tmp_path / "bad.pdf", data)
    good = write(tmp_path / "good.pdf", pdf_bytes(good_page, "good"))
    processor, store, counter, batch_id = setup([str(bad), str(good)], **options)
    run_all(processor, store)
    rows = {row.source: row for row in items(store, batch_id)}
    assert (rows[str(bad)].state, rows[str(bad)].last_error_code) == (ItemState.FAILED, code)
    assert not any(row.parent_item_id == rows[str(bad)].id for row in rows.values())
    assert rows[page_source(str(good), good_page)].state == ItemState.SUCCEEDED
    assert counter.calls == 1  # no page of the bad document was called
    assert store.complete_finished_batches() == [batch_id]


def test_pages_reads_only_the_listed_pages_and_a_blank_one_fails(
    setup: Make, tmp_path: Path
) -> None:
    pdf = write(tmp_path / "invoice.pdf", pdf_bytes(5, blank=(4,)))
    processor, store, counter, batch_id = setup([str(pdf)], pages="1,3-4")
    run_all(processor, store)
    pages = {row.page: row for row in items(store, batch_id) if row.page is not None}
    assert sorted(pages) == [1, 3, 4]
    assert (pages[4].state, pages[4].last_error_code) == (ItemState.FAILED, "page_blank")
    assert counter.calls == 2
    [document] = DocumentReports(store.engine).iter_documents(batch_id)
    merged = merge_document(document)
    assert (merged.state, merged.failed_pages, merged.error_code) == (
        ItemState.FAILED,
        (4,),
        "page_blank",
    )


def test_a_page_is_estimated_from_its_rendered_size(setup: Make, tmp_path: Path) -> None:
    pdf = write(tmp_path / "invoice.pdf", pdf_bytes(1))
    processor, store, _, batch_id = setup([str(pdf)], max_pixels=250_000, dpi=300)
    run_all_but_pages(processor, store)
    [page_id] = store.pick_for_dispatch(10)
    held = store.claim(page_id, "c" * 32, utcnow())
    assert held is not None
    plan = processor.rt.plan(batch_id)
    loaded = processor.rt.documents.load(held, plan.options, plan.documents)
    assert isinstance(loaded, PageImage)
    info = loaded.image.info
    assert info is not None and info.width * info.height <= 250_000
    assert info.width * info.height >= 0.95 * 250_000  # 300 dpi is more than the cap allows
    # What the throttle reserves for the call: the page's own size, not the largest image.
    estimate = TokenEstimator().estimate(plan.options, info)
    assert estimate.image_tokens == image_tokens(info.width, info.height, MODEL, None, 250_000)
    assert estimate.image_tokens < TokenEstimator().estimate(plan.options, None).image_tokens


def run_all_but_pages(processor: ItemProcessor, store: Store) -> None:
    for item_id in store.pick_for_dispatch(100):
        assert processor.process(item_id) == Outcome.EXPANDED


def test_documents_on_s3_are_downloaded_once_and_named_images_read_as_images(
    setup: Make, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    s3 = make_s3_client(s3_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="in/invoice.pdf", Body=pdf_bytes(2, "s3"))
    s3.put_object(Bucket=s3_bucket, Key="in/really-a.pdf", Body=png_bytes(3))
    sources = [f"s3://{s3_bucket}/in/invoice.pdf", f"s3://{s3_bucket}/in/really-a.pdf"]
    processor, store, counter, _ = setup(sources)
    outcomes = run_all(processor, store)
    assert sorted(outcomes.values()) == sorted([Outcome.EXPANDED, *[Outcome.SUCCEEDED] * 3])
    assert counter.calls == 3
    cached = [path for path in (tmp_path / "document-cache").iterdir()]
    assert len(cached) == 2  # each object downloaded once: the pages render from the copy


def test_url_documents_are_downloaded_with_a_size_cap_and_a_deadline(tmp_path: Path) -> None:
    root = tmp_path / "www"
    write(root / "invoice.pdf", pdf_bytes(2))
    fetcher = ImageFetcher(lambda: make_s3_client(None))

    def files(**options: Any) -> DocumentFiles:
        return DocumentFiles(fetcher, tmp_path / "cache", options.pop("deadline", 30.0), **options)

    with serve_folder(root) as base:
        url = f"{base}/invoice.pdf?X-Amz-Signature=secret123"
        path = files().path(url, None)
        assert path.read_bytes() == (root / "invoice.pdf").read_bytes()
        assert files().path(url, None) == path  # cached
        failures: list[tuple[Callable[[], object], str, bool]] = [
            (lambda: files(max_bytes=100).path(url + "&a", None), "document_too_large", False),
            (lambda: files(deadline=0.0).path(url + "&b", None), "source_unreachable", True),
            (lambda: files().path(f"{base}/missing.pdf", None), "source_not_found", False),
        ]
        for call, code, retryable in failures:
            with pytest.raises(FetchError) as caught:
                call()
            assert (caught.value.code, caught.value.retryable) == (code, retryable)
            assert "secret123" not in caught.value.message
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".part-")]


def test_the_cache_keeps_to_its_budget(tmp_path: Path) -> None:
    root = tmp_path / "www"
    for n in range(4):
        write(root / f"d{n}.pdf", pdf_bytes(1, f"doc {n}"))
    size = (root / "d0.pdf").stat().st_size
    fetcher = ImageFetcher(lambda: make_s3_client(None))
    files = DocumentFiles(fetcher, tmp_path / "cache", 30.0, cache_bytes=int(size * 2.5))
    with serve_folder(root) as base:
        for n in range(4):
            files.path(f"{base}/d{n}.pdf", None)
    assert len(list((tmp_path / "cache").iterdir())) == 2


def test_a_batch_whose_documents_all_failed_completes(setup: Make, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.pdf", encrypted_pdf_bytes())
    processor, store, _, batch_id = setup([str(bad)])
    run_all(processor, store)
    assert store.complete_finished_batches() == [batch_id]
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.state == BatchState.COMPLETED
