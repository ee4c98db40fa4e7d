"""The story of one shard in a worker: build its file, upload it, start it; later, collect it.

A shard comes here twice (:mod:`scheduler.batch_mode` sends it): when ``pending`` — read
its items' images (a document's pages are added to the batch as a realtime worker adds
them, for the shards to come; a page is rendered), write one JSONL line per item within the
provider's limits, count the calls, upload the file, keep its id, make the provider batch
from it — and when
``collecting`` — read the output and error files into the items
(:mod:`models.shard_results`) and close it. Each step is held under the shard's lease and
written before the next, so a worker killed anywhere leaves a shard the next worker takes
up from where it stood: an upload whose file id was kept is never made again, one whose
answer was lost is found by its file name, a provider batch whose answer was lost by its
input file, and counted calls are never counted twice.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

from qocr.errors import QocrError
from qocr.models.base import utcnow
from qocr.models.document_pages import ExpansionResult
from qocr.models.records import AttemptRecord, ClaimedItem
from qocr.models.shard_results import LineVerdict, ShardResults
from qocr.models.shard_store import ShardItemRow, ShardLease, ShardStore
from qocr.models.shards import ShardState
from qocr.models.states import AttemptOutcome, BatchState, ItemState
from qocr.qwen.batch_api import LineOutcome, endpoint_for, parse_line, request_line
from qocr.qwen.batch_client import BatchClient
from qocr.qwen.errors import QwenError
from qocr.qwen.images import prepare_image
from qocr.worker.documents import Expand
from qocr.worker.process import later_seconds, result_record
from qocr.worker.render import DocumentError
from qocr.worker.runtime import BatchPlan, Runtime

log = logging.getLogger(__name__)

# Images read at once while a file is built, and verdicts written per transaction.
FETCH_THREADS = 8
VERDICTS_PER_WRITE = 500
# An image that could not be read yet (S3 away) waits this long for a later shard.
READ_LATER_SECONDS = 30.0
LINE_TOO_LARGE = "batch_line_too_large"
# What the items no line spoke for end in, by the provider batch's final status.
MISSING_CODES = {
    "expired": ("batch_expired", "the provider batch expired before this line ran"),
    "cancelled": ("batch_cancelled", "the provider batch was cancelled before this line ran"),
    "failed": ("batch_failed", "the provider batch failed"),
    "completed": ("batch_line_missing", "the provider batch ended without this line"),
}

BatchClientFactory = Callable[[], BatchClient]

# A document found in a rebuilt file: its calls were counted as lines already (a file made
# before documents were expanded in batch mode), so it cannot become pages now.
NOT_EXPANDED = "document_not_expanded"


@dataclass
class _Built:
    """A shard's file as written: its item ids, size, and the items left out of it."""

    ids: list[int] = field(default_factory=list)
    size_bytes: int = 0
    overflow: list[int] = field(default_factory=list)  # over the file's limits: a later shard
    later: list[int] = field(default_factory=list)  # image not readable yet: a later shard
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (id, code, message)


def shard_filename(batch_id: int, shard_id: int) -> str:
    """The uploaded file's name: how a restarted upload finds an earlier one."""
    return f"qocr-batch{batch_id}-shard{shard_id}.jsonl"


class ShardWorker:
    """Advances shards with one worker process's runtime (store, image fetcher, settings)."""

    def __init__(self, runtime: Runtime, client: BatchClientFactory) -> None:
        self.rt = runtime
        self.client = client
        self.shards = ShardStore(runtime.store.engine)
        self.results = ShardResults(runtime.store.engine)
        self.settings = runtime.settings

    def advance(self, shard_id: int) -> str:
        """Do the shard's pending step, if no other worker holds it; returns what was done."""
        token = uuid.uuid4().hex
        lease = self.shards.lease(shard_id, token, self._lease_until())
        if lease is None:
            return "skipped"
        with self._renewing(lease):
            if lease.state == ShardState.PENDING:
                return self._submit(lease)
            return self._collect(lease)

    # -- pending: build, count, upload, create -------------------------------------------

    def _submit(self, lease: ShardLease) -> str:
        batch = self.rt.store.get_batch(lease.batch_id)
        if batch is None or batch.state != BatchState.RUNNING:
            self._close(lease, "cancelled")
            return "closed"
        plan = self.rt.plan(lease.batch_id)
        filename = shard_filename(lease.batch_id, lease.id)
        with self.client() as client:
            file_id = lease.file_id
            if file_id is None and lease.counted:
                # Counted means an upload may have started: its answer may have been lost.
                file_id = client.find_file(filename)
            if file_id is None:
                with tempfile.TemporaryDirectory(prefix="qocr-shard-") as folder:
                    path = Path(folder) / filename
                    if not self._write(lease, plan, path):
                        return "closed"
                    file_id = client.upload(filename, path)
            if not self.shards.record_file(lease, file_id):
                return "lease_lost"
            provider = client.find_batch(file_id)
            if provider is None:
                metadata = {
                    "ds_name": f"qocr batch {lease.batch_id} shard {lease.id}",
                    "ds_description": f"qocr {batch.name}"[:200],
                }
                provider = client.create_batch(file_id, endpoint_for(plan.options.model), metadata)
        if not self.shards.record_submitted(lease, provider.id, provider.status.value):
            return "lease_lost"
        log.info("shard %s: provider batch %s (%s)", lease.id, provider.id, provider.status.value)
        return "submitted"

    def _write(self, lease: ShardLease, plan: BatchPlan, path: Path) -> bool:
        """Write the shard's file; False when nothing is left to send (the shard is closed)."""
        items = [item for item in self.shards.items(lease.id) if item.state == ItemState.QUEUED]
        built = self._build(lease, plan, items, path)
        if lease.counted:
            self._settle_rebuild(lease, built)
            ids = built.ids
        else:
            self.shards.release(lease.id, built.overflow, None)
            later = utcnow() + timedelta(seconds=READ_LATER_SECONDS)
            self.shards.release(lease.id, built.later, later)
            self.shards.fail_uncounted(lease, built.failures)
            ids = self.shards.count_calls(
                lease, built.size_bytes, self.rt.worker_name, self.settings.max_attempts
            )
            if set(ids) != set(built.ids):
                _keep_lines(path, set(ids))
        if not ids:
            self._close(lease, "completed")
            return False
        return True

    def _build(
        self, lease: ShardLease, plan: BatchPlan, items: list[ShardItemRow], path: Path
    ) -> _Built:
        built = _Built()
        limits = (self.settings.batch_max_lines, self.settings.batch_max_bytes)
        with path.open("wb") as out, ThreadPoolExecutor(FETCH_THREADS) as pool:
            for start in range(0, len(items), FETCH_THREADS * 8):
                chunk = items[start : start + FETCH_THREADS * 8]
                for item, line in zip(
                    chunk, pool.map(lambda i: self._line(lease, plan, i), chunk), strict=True
                ):
                    if isinstance(line, ExpansionResult):
                        continue  # a document: it left the shard, its pages wait for later ones
                    if isinstance(line, _Unreadable):
                        if line.retryable:
                            built.later.append(item.item_id)
                        else:
                            built.failures.append((item.item_id, line.code, line.message))
                    elif len(line) > self.settings.batch_max_line_bytes:
                        built.failures.append(
                            (
                                item.item_id,
                                LINE_TOO_LARGE,
                                f"the request is {len(line)} bytes, over the Batch API's "
                                f"{self.settings.batch_max_line_bytes} a line (send S3 images "
                                "as presigned URLs: --s3-mode presign)",
                            )
                        )
                    elif len(built.ids) >= limits[0] or built.size_bytes + len(line) > limits[1]:
                        built.overflow.append(item.item_id)
                    else:
                        out.write(line)
                        built.ids.append(item.item_id)
                        built.size_bytes += len(line)
        return built

    def _line(
        self, lease: ShardLease, plan: BatchPlan, item: ShardItemRow
    ) -> bytes | _Unreadable | ExpansionResult:
        """The item's request line; or, for a document, its pages added to the batch (as a
        realtime worker adds them), the document leaving the shard."""
        held = ClaimedItem(
            item_id=item.item_id,
            batch_id=lease.batch_id,
            source=item.source,
            fingerprint=item.fingerprint,
            attempts=0,
            lease_token=lease.token,
        )
        try:
            loaded = self.rt.documents.load(
                held, plan.options, plan.documents, self._expander(lease)
            )
            if isinstance(loaded, ExpansionResult):
                return loaded
            if loaded is not None:  # a page, or an image behind a document's name: inline
                url = loaded.image.url
            else:
                raw = self.rt.fetcher.fetch(
                    item.source, plan.s3_mode, self.settings.batch_presign_seconds
                )
                url = prepare_image(raw).url
        except QocrError as exc:
            return _Unreadable(exc.code, exc.message, bool(getattr(exc, "retryable", False)))
        return request_line(str(item.item_id), url, plan.options)

    def _expander(self, lease: ShardLease) -> Expand:
        if lease.counted:
            return _not_expanded
        pages = self.rt.documents.pages
        return lambda item, numbers: pages.expand_in_shard(item, lease.id, lease.token, numbers)

    def _settle_rebuild(self, lease: ShardLease, built: _Built) -> None:
        """A rebuilt file (the first upload's answer was lost): its calls were counted, so
        the items left out end their counted try now."""
        now = utcnow()
        verdicts = [
            LineVerdict(item_id, self._attempt(AttemptOutcome.FAILED, code, message))
            for item_id, code, message in built.failures
        ]
        verdicts += [
            LineVerdict(
                item_id,
                self._attempt(AttemptOutcome.RETRY, "batch_not_sent", "left out of its shard"),
                not_before=now,
            )
            for item_id in built.overflow + built.later
        ]
        if verdicts:
            self.results.apply(lease, verdicts, self.settings.max_attempts)

    # -- collecting: output and error files into the items ---------------------------------

    def _collect(self, lease: ShardLease) -> str:
        plan = self.rt.plan(lease.batch_id)
        stopped: QwenError | None = None
        files = [fid for fid in (lease.output_file_id, lease.error_file_id) if fid]
        if files:
            with self.client() as client, tempfile.TemporaryDirectory(prefix="qocr-out-") as folder:
                for file_id in files:
                    path = Path(folder) / "lines.jsonl"
                    client.download(file_id, path)
                    stopped = self._read_lines(lease, plan, path) or stopped
        if stopped is not None:
            reason = f"{stopped.code}: {stopped.message}"
            self.rt.store.stop_batch(lease.batch_id, reason, code="batch_stopped")
        self._close(lease, lease.provider_status or "completed")
        return "collected"

    def _read_lines(self, lease: ShardLease, plan: BatchPlan, path: Path) -> QwenError | None:
        stopped = None
        pending: list[LineVerdict] = []
        with path.open("rb") as lines:
            for raw in lines:
                if not raw.strip():
                    continue
                verdict = self._verdict(lease, parse_line(raw, plan.options), plan)
                if verdict is None:
                    continue
                if verdict[1] is not None:
                    stopped = verdict[1]
                pending.append(verdict[0])
                if len(pending) >= VERDICTS_PER_WRITE:
                    self.results.apply(lease, pending, self.settings.max_attempts)
                    pending = []
        if pending:
            self.results.apply(lease, pending, self.settings.max_attempts)
        return stopped

    def _verdict(
        self, lease: ShardLease, line: LineOutcome, plan: BatchPlan
    ) -> tuple[LineVerdict, QwenError | None] | None:
        if line.custom_id is None or not line.custom_id.isdigit():
            log.warning("shard %s: an unreadable line or unknown custom_id: ignored", lease.id)
            return None
        item_id = int(line.custom_id)
        if line.result is not None:
            record = replace(
                result_record(line.result, 0.0, None, plan.options.fingerprint()), latency_ms=None
            )
            attempt = replace(
                self._attempt(AttemptOutcome.SUCCEEDED, None, None),
                http_status=200,
                request_id=line.result.request_id,
            )
            return LineVerdict(item_id, attempt, result=record), None
        error = line.error
        assert error is not None
        if error.stops_batch:
            outcome = AttemptOutcome.STOPPED
        elif error.retryable:
            outcome = AttemptOutcome.RETRY
        else:
            outcome = AttemptOutcome.FAILED
        attempt = AttemptRecord(
            started_at=utcnow(),
            ended_at=utcnow(),
            outcome=outcome,
            http_status=error.status,
            error_code=error.code,
            error_message=error.message,
            request_id=error.request_id,
            retry_after=error.retry_after,
            worker=self.rt.worker_name,
        )
        not_before = utcnow() + timedelta(seconds=later_seconds(1, error))
        return (
            LineVerdict(item_id, attempt, not_before=not_before),
            error if error.stops_batch else None,
        )

    # -- plumbing ---------------------------------------------------------------------

    def _close(self, lease: ShardLease, provider_status: str) -> None:
        code, message = MISSING_CODES.get(provider_status, MISSING_CODES["completed"])
        if provider_status == "failed" and lease.error_message:
            message = f"{message}: {lease.error_message}"
        applied = self.results.close(lease, code, message, utcnow(), self.settings.max_attempts)
        if applied.requeued or applied.failed:
            log.info(
                "shard %s closed (%s): %d items back in the queue, %d failed",
                lease.id,
                provider_status,
                applied.requeued,
                applied.failed,
            )

    def _attempt(
        self, outcome: AttemptOutcome, code: str | None, message: str | None
    ) -> AttemptRecord:
        now = utcnow()
        return AttemptRecord(
            started_at=now,
            ended_at=now,
            outcome=outcome,
            error_code=code,
            error_message=message,
            worker=self.rt.worker_name,
        )

    def _lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.settings.lease_seconds)

    @contextmanager
    def _renewing(self, lease: ShardLease) -> Iterator[None]:
        """Keep the shard's lease while this worker works on it (an upload takes minutes)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.settings.lease_seconds / 3):
                try:
                    self.shards.renew(lease.id, lease.token, self._lease_until())
                except Exception:
                    log.warning("shard %s: lease renewal failed", lease.id, exc_info=True)

        thread = threading.Thread(target=renew, name=f"qocr-shard-{lease.id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


@dataclass(frozen=True)
class _Unreadable:
    """An image that could not become a line."""

    code: str
    message: str
    retryable: bool


def _not_expanded(item: ClaimedItem, pages: Sequence[int]) -> ExpansionResult:
    raise DocumentError(
        f"a document of {len(pages)} pages in a shard whose lines were counted already; "
        "it was not read as pages (qocr retry sends it again)",
        code=NOT_EXPANDED,
    )


def _keep_lines(path: Path, item_ids: set[int]) -> None:
    """Rewrite the file with only the lines of ``item_ids`` (others left since it was built)."""
    kept = path.with_suffix(".kept")
    with path.open("rb") as source, kept.open("wb") as out:
        for line in source:
            custom_id = line.split(b'"custom_id":"', 1)[1].split(b'"', 1)[0]
            if int(custom_id) in item_ids:
                out.write(line)
    kept.replace(path)
