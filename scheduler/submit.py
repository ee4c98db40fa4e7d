"""Create a batch from sources, in one transaction (the caller publishes it: see worker.publish)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from qocr.migrations.database import open_database
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.store import Store
from qocr.qwen.options import RecognizeOptions
from qocr.s3 import make_s3_client
from qocr.scheduler.cache_policy import CachePolicy
from qocr.scheduler.document_options import DEFAULT_DOCUMENT_OPTIONS, DocumentOptions
from qocr.scheduler.sources import SourceError, SourceExpander
from qocr.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRequest:
    """What ``qocr submit`` / ``qocr run`` were asked for, before anything is written."""

    sources: list[str]
    options: RecognizeOptions
    api: str
    name: str | None = None
    s3_mode: str = "inline"
    schedule_name: str | None = None
    scheduled_for: Any = None
    notify_url: str | None = None
    # Set by scheduler.idempotency for a submit with a key: the key and the request's hash.
    idempotency_key: str | None = None
    request_sha256: str | None = None
    # None: the default policy for the model (scheduler.cache_policy).
    cache: CachePolicy | None = None
    # "realtime", or "batch": the provider's Batch API (scheduler/batch_mode.py).
    mode: str = "realtime"
    # Which pages of PDFs and TIFFs are read, at most how many, at what DPI.
    documents: DocumentOptions = DEFAULT_DOCUMENT_OPTIONS

    def cache_policy(self) -> CachePolicy:
        return self.cache if self.cache is not None else CachePolicy.for_model(self.options.model)

    def spec(self) -> BatchSpec:
        return BatchSpec(
            name=self.name or _default_name(self.sources),
            api=self.api,
            model=self.options.model,
            task=self.options.task,
            prompt=self.options.prompt,
            result_schema=self.options.result_schema,
            options=self.options.to_dict(),
            source_options={
                "s3_mode": self.s3_mode,
                **self.cache_policy().source_options(),
                **self.documents.source_options(),
            },
            schedule_name=self.schedule_name,
            scheduled_for=self.scheduled_for,
            notify_url=self.notify_url,
            idempotency_key=self.idempotency_key,
            request_sha256=self.request_sha256,
            mode=self.mode,
        )


def _default_name(sources: list[str]) -> str:
    first = sources[0] if sources else "batch"
    return first if len(sources) == 1 else f"{first} (+{len(sources) - 1})"


def open_store(settings: Settings) -> Store:
    """The store, with its schema created on a new SQLite file and checked elsewhere.

    Opened as every command opens it: a database that is down, or slow to answer, is one
    clear :class:`ConfigError` line within a connect timeout, not a driver traceback.
    """
    return Store(open_database(settings))


def create_batch(store: Store, request: BatchRequest, settings: Settings) -> tuple[int, int]:
    """Expand the sources and insert the batch with its items; nothing is kept on error."""
    endpoint = settings.s3_endpoint_url
    expander = SourceExpander(lambda: make_s3_client(endpoint))
    return store.create_batch(request.spec(), _non_empty(expander.expand(request.sources)))


def _non_empty(rows: Iterable[SourceRow]) -> Iterator[SourceRow]:
    count = 0
    for row in rows:
        count += 1
        yield row
    if count == 0:
        raise SourceError("no images found", code="source_empty", where="sources")
