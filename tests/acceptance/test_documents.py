"""PDFs and multi-page TIFFs end to end: `qocr submit` → real `qocr worker` processes expand
documents into page items → the emulator reads each page → `qocr results --by document`.
A worker SIGKILLed while it expands a document, and bad documents beside good ones."""

from __future__ import annotations

import csv
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from qocr.models import Attempt, BatchState, Item, ItemState
from qocr.models.page_merge import PAGE_SEPARATOR, merge_values
from tests.support.documents import (
    corrupt_pdf_bytes,
    encrypted_pdf_bytes,
    pdf_bytes,
    tiff_bytes,
    write,
)
from tests.support.images import png_bytes
from tests.support.pipeline import Deployment, MakeDeployment
from tests.support.processes import kill_hard, wait_until

pytestmark = pytest.mark.timeout(300)
SCHEMA = Path(__file__).resolve().parents[2] / "samples" / "invoice-schema.json"
# The killed-worker tests' lease: the shortest the settings allow (a live worker renews it
# three times a lease), so the dead worker's items come back within seconds.
LEASE_SECONDS = "5"


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def completed(deployment: Deployment, batch_id: int) -> bool:
    batch = deployment.store.get_batch(batch_id)
    return batch is not None and batch.state == BatchState.COMPLETED


def test_a_folder_of_a_pdf_a_tiff_and_a_png_is_six_pages_and_three_documents(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy()
    folder = tmp_path / "invoices"
    pdf = write(folder / "a-invoice.pdf", pdf_bytes(3, "invoice A"))
    tiff = write(folder / "b-scan.tiff", tiff_bytes(2, "scan B"))
    png = write(folder / "c-photo.png", png_bytes(42))
    batch_id = deployment.submit(str(folder), "--schema", str(SCHEMA))
    with deployment.worker():
        assert wait_until(lambda: completed(deployment, batch_id), 120), deployment.logs()

    stats = deployment.emulator.stats()
    assert stats["requests"] == 6  # pages and images are called; documents are not
    assert sorted(stats["successes_per_image"].values()) == [1] * 6
    status = json.loads(deployment.qocr("status", str(batch_id), "--json"))
    assert status["documents"] == {"documents": 3, "pages": 6, "expanded": 2}
    assert status["counts"]["succeeded"] == 6 and status["counts"]["expanded"] == 2

    items = {line["item_id"]: line for line in jsonl(deployment.qocr("results", str(batch_id)))}
    documents = jsonl(deployment.qocr("results", str(batch_id), "--by", "document"))
    assert [d["source"] for d in documents] == [str(p.resolve()) for p in (pdf, tiff, png)]
    assert [d["page_count"] for d in documents] == [3, 2, 1]
    for document in documents:
        assert document["state"] == "succeeded" and document["failed_pages"] == []
        pages = [items[page["item_id"]] for page in document["pages"]]
        numbers = [page["page"] for page in document["pages"]]
        assert numbers == list(range(1, len(pages) + 1))
        if document["page_count"] > 1:
            assert [page["page"] for page in pages] == numbers
            assert all(page["document_id"] == document["document_id"] for page in pages)
            assert all(page["source"].endswith(f"#page={page['page']}") for page in pages)
        assert document["text"] == PAGE_SEPARATOR.join(page["text"] for page in pages)
        assert document["kv_result"] == merge_values([page["kv_result"] for page in pages])
        assert set(document["kv_result"]) == set(json.loads(SCHEMA.read_text()))
        usage = document["usage"]
        assert usage["total_tokens"] == sum(page["usage"]["total_tokens"] for page in pages)
        assert document["cost_usd"] > 0

    exported = deployment.qocr("results", str(batch_id), "--by", "document", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(exported)))
    assert [row["page_count"] for row in table] == ["3", "2", "1"]
    assert {"number", "seller", "date", "total", "text"} <= set(table[0])

    shown = json.loads(deployment.qocr("show", str(documents[0]["document_id"]), "--json"))
    assert shown["state"] == "expanded"
    assert [page["page"] for page in shown["pages"]] == [1, 2, 3]


class _SlowPdf(http.server.BaseHTTPRequestHandler):
    """Serves one PDF, slowly while ``slow`` is set; counts the requests."""

    body = b""
    slow = threading.Event()
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/pdf")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        try:
            for start in range(0, len(self.body), 4096):
                self.wfile.write(self.body[start : start + 4096])
                if self.slow.is_set():
                    time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker was killed mid-download

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def slow_pdf() -> Iterator[tuple[str, type[_SlowPdf]]]:
    state = {"slow": threading.Event(), "requests": 0, "body": pdf_bytes(50, "fifty")}
    handler: type[_SlowPdf] = type("SlowPdf", (_SlowPdf,), state)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fifty.pdf", handler
    server.shutdown()
    server.server_close()


def test_a_worker_killed_while_it_expands_a_50_page_pdf_leaves_exactly_50_results(
    deploy: MakeDeployment, slow_pdf: tuple[str, type[_SlowPdf]]
) -> None:
    url, server = slow_pdf
    deployment = deploy()
    env = {"QOCR_LEASE_SECONDS": LEASE_SECONDS, "QOCR_MAX_ATTEMPTS": "4"}
    server.slow.set()
    batch_id = deployment.submit(url)
    [document_id] = [item_id for item_id, _ in _items(deployment, batch_id)]
    with deployment.worker(name="doomed", **env) as doomed:
        # The worker holds the document and is reading it: the expansion is under way.
        assert wait_until(lambda: server.requests >= 1, 60, interval=0.05), deployment.logs()
        assert _state(deployment, document_id) == ItemState.RUNNING
        kill_hard(doomed)
    assert _items(deployment, batch_id) == [(document_id, ItemState.RUNNING)]  # no page yet
    server.slow.clear()
    with deployment.worker(name="survivor", **env):
        assert wait_until(lambda: completed(deployment, batch_id), 150), deployment.logs()

    assert deployment.result_count(batch_id) == 50
    counts = deployment.counts(batch_id)
    assert (counts[ItemState.SUCCEEDED], counts[ItemState.EXPANDED]) == (50, 1)
    # No page was called before the kill, so none was called twice after it.
    stats = deployment.emulator.stats()
    assert stats["requests"] == 50
    assert sorted(stats["requests_per_image"].values()) == [1] * 50
    pages = sorted(page for page, _ in _pages(deployment, document_id))
    assert pages == list(range(1, 51))
    with deployment.store.sessions() as session:
        # The killed try is on the document's record: it counts toward its attempts.
        outcomes = session.scalars(select(Attempt.error_code).where(Attempt.item_id == document_id))
        assert list(outcomes) == ["worker_lost"]


def test_a_worker_killed_among_a_documents_pages_pays_again_only_for_those_in_flight(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(300, 600))
    pdf = write(tmp_path / "fifty.pdf", pdf_bytes(50, "fifty"))
    env = {"QOCR_LEASE_SECONDS": LEASE_SECONDS, "QOCR_MAX_ATTEMPTS": "4"}
    # Without the result cache: its in-flight markers would hold the dead worker's pages
    # back for their own TTL, which this test is not about.
    batch_id = deployment.submit(str(pdf), "--no-cache")
    with deployment.worker(name="doomed", **env) as doomed:
        assert wait_until(lambda: deployment.result_count(batch_id) >= 5, 90), deployment.logs()
        in_flight = sum(
            1 for _, state in _items(deployment, batch_id) if state == ItemState.RUNNING
        )
        kill_hard(doomed)
    with deployment.worker(name="survivor", **env):
        assert wait_until(lambda: completed(deployment, batch_id), 150), deployment.logs()

    assert deployment.result_count(batch_id) == 50
    calls = deployment.emulator.stats()["requests_per_image"]
    assert len(calls) == 50
    assert sum(calls.values()) - 50 <= in_flight


def test_bad_documents_fail_with_their_codes_beside_good_ones(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy()
    folder = tmp_path / "mixed"
    write(folder / "encrypted.pdf", encrypted_pdf_bytes())
    write(folder / "corrupt.pdf", corrupt_pdf_bytes())
    write(folder / "long.pdf", pdf_bytes(6, "long"))
    write(folder / "good.pdf", pdf_bytes(2, "good"))
    write(folder / "good.tif", tiff_bytes(2, "good scan"))
    write(folder / "photo.png", png_bytes(3))
    batch_id = deployment.submit(str(folder), "--max-pages", "5")
    with deployment.worker():
        assert wait_until(lambda: completed(deployment, batch_id), 120), deployment.logs()

    failures = deployment.failures(batch_id)
    codes = {Path(source).name: code for source, (code, _) in failures.items()}
    assert codes == {
        "encrypted.pdf": "document_encrypted",
        "corrupt.pdf": "document_corrupt",
        "long.pdf": "document_too_many_pages",
        "good.pdf": None,  # expanded: done, its pages succeeded
        "good.tif": None,
    }
    counts = deployment.counts(batch_id)
    assert (counts[ItemState.SUCCEEDED], counts[ItemState.FAILED]) == (5, 3)
    assert deployment.emulator.stats()["requests"] == 5  # no page of a bad document called
    documents = jsonl(deployment.qocr("results", str(batch_id), "--by", "document"))
    states = {Path(d["source"]).name: (d["state"], d["error_code"]) for d in documents}
    assert states["long.pdf"] == ("failed", "document_too_many_pages")
    assert states["good.pdf"] == ("succeeded", None)


def _items(deployment: Deployment, batch_id: int) -> list[tuple[int, ItemState]]:
    with deployment.store.sessions() as session:
        rows = session.execute(
            select(Item.id, Item.state).where(Item.batch_id == batch_id).order_by(Item.id)
        )
        return [(item_id, ItemState(state)) for item_id, state in rows]


def _pages(deployment: Deployment, document_id: int) -> list[tuple[int, ItemState]]:
    with deployment.store.sessions() as session:
        rows = session.execute(
            select(Item.page, Item.state).where(Item.parent_item_id == document_id)
        )
        return [(int(page or 0), ItemState(state)) for page, state in rows]


def _state(deployment: Deployment, item_id: int) -> ItemState | None:
    with deployment.store.sessions() as session:
        item = session.get(Item, item_id)
        return None if item is None else ItemState(item.state)
