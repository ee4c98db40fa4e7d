"""Everything one worker process needs, built once from the settings and shared by its tasks."""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path

from qocr.models.db import make_engine
from qocr.models.document_pages import DocumentPages
from qocr.models.store import Store
from qocr.qwen.catalog import model_spec
from qocr.qwen.client import QwenOCRClient
from qocr.qwen.options import RecognizeOptions
from qocr.s3 import make_s3_client
from qocr.scheduler.cache_policy import CachePolicy
from qocr.scheduler.document_options import DEFAULT_DOCUMENT_OPTIONS, DocumentOptions
from qocr.settings import Settings
from qocr.worker.breaker import CircuitBreaker, KeyValue, MemoryKeyValue, RedisKeyValue
from qocr.worker.cache import MARKER_TTL_SECONDS, ResultCache
from qocr.worker.document_files import DocumentFiles
from qocr.worker.documents import DocumentRunner
from qocr.worker.fetch import ImageFetcher
from qocr.worker.leases import LeaseKeeper
from qocr.worker.limits import LIMITS
from qocr.worker.result_spool import ResultSpool
from qocr.worker.throttle import Limits, MemoryBackend, Throttle, ThrottleBackend

_NO_CACHE = CachePolicy(enabled=False)


@dataclass(frozen=True)
class BatchPlan:
    """A batch's request, as a worker needs it (read once per process and batch)."""

    batch_id: int
    api: str
    options: RecognizeOptions
    s3_mode: str
    limits: Limits
    # What the result cache keys a request on (the options and the API), and its policy.
    fingerprint: str = ""
    cache: CachePolicy = _NO_CACHE
    # Which pages of its documents (PDF, TIFF) are read, at most how many, at what DPI.
    documents: DocumentOptions = DEFAULT_DOCUMENT_OPTIONS


class Runtime:
    """The process-wide collaborators of :class:`worker.process.ItemProcessor`."""

    def __init__(
        self,
        settings: Settings,
        throttle_backend: ThrottleBackend | None = None,
        store: Store | None = None,
        breaker_kv: KeyValue | None = None,
    ) -> None:
        self.settings = settings
        self._breaker_kv = breaker_kv
        if store is not None:
            self.__dict__["store"] = store  # shared with the caller (the embedded mode)
        self.worker_name = f"{socket.gethostname()}:{threading.get_native_id()}"
        self._throttle_backend = throttle_backend
        self._plans: dict[int, BatchPlan] = {}
        self._clients: dict[str, QwenOCRClient] = {}
        self._lock = threading.Lock()

    @cached_property
    def store(self) -> Store:
        return Store(make_engine(self.settings.database_url))

    @cached_property
    def fetcher(self) -> ImageFetcher:
        endpoint = self.settings.s3_endpoint_url
        return ImageFetcher(lambda: make_s3_client(endpoint))

    @cached_property
    def throttle(self) -> Throttle:
        backend = self._throttle_backend
        if backend is None:
            backend = self._redis_backend()
        # A task waits at most this long for a slot before it hands its item back.
        return Throttle(backend, max_wait=LIMITS.throttle_max_wait_seconds)

    def _redis_backend(self) -> ThrottleBackend:
        import redis

        from qocr.worker.throttle_redis import RedisBackend

        return RedisBackend(redis.Redis.from_url(self.settings.effective_redis_url))

    @cached_property
    def breaker(self) -> CircuitBreaker:
        kv = self._breaker_kv
        if kv is None:
            import redis

            kv = RedisKeyValue(redis.Redis.from_url(self.settings.effective_redis_url))
        return CircuitBreaker(kv)

    @cached_property
    def cache(self) -> ResultCache:
        kv = self._breaker_kv  # the embedded mode's memory twin
        if kv is None:
            import redis

            kv = RedisKeyValue(redis.Redis.from_url(self.settings.effective_redis_url))
        # A key's "in flight" marker is renewed while its holder lives (worker/cache.py).
        return ResultCache(self.store, kv, self.worker_name, MARKER_TTL_SECONDS)

    @cached_property
    def spool(self) -> ResultSpool:
        # One folder per database: a kept result belongs to the database its item is in.
        database = self.store.engine.url.render_as_string(hide_password=True)
        folder = hashlib.sha256(database.encode()).hexdigest()[:16]
        spool = ResultSpool(self.settings.effective_spool_dir / folder, self.store)
        # A kept result's item stays leased until it is saved.
        spool.on_saved = self.leases.stop_holding
        if spool.pending():  # what a predecessor on this machine kept
            spool.start()
        return spool

    @cached_property
    def leases(self) -> LeaseKeeper:
        return LeaseKeeper(
            self.store,
            timedelta(seconds=self.settings.lease_seconds),
            renewals_per_lease=LIMITS.lease_renewals_per_lease,
        )

    def client(self, api: str) -> QwenOCRClient:
        """One pooled HTTP client per API, reused by every task of the process."""
        with self._lock:
            client = self._clients.get(api)
            if client is None:
                client = QwenOCRClient(
                    api_key=self.settings.require_api_key(),
                    region=self.settings.region,
                    base_url=self.settings.base_url,
                    api=api,  # type: ignore[arg-type]
                    timeout=self.settings.request_timeout,
                    deadline_seconds=self.settings.call_deadline_seconds,
                    # One pool per process, shared by every task thread.
                    max_connections=64,
                )
                self._clients[api] = client
            return client

    @cached_property
    def documents(self) -> DocumentRunner:
        # Downloaded documents are cached per machine (every worker process shares them).
        folder = Path(tempfile.gettempdir()) / f"qocr-documents-{os.getuid()}"
        files = DocumentFiles(self.fetcher, folder, LIMITS.document_download_deadline_seconds)
        return DocumentRunner(DocumentPages(self.store.engine), files)

    def plan(self, batch_id: int) -> BatchPlan:
        plan = self._plans.get(batch_id)
        if plan is not None:
            return plan
        batch = self.store.get_batch(batch_id)
        if batch is None:
            raise LookupError(f"batch {batch_id} does not exist")
        options = RecognizeOptions.from_dict(batch.options)
        spec = model_spec(options.model)
        plan = BatchPlan(
            batch_id=batch_id,
            api=batch.api,
            options=options,
            s3_mode=str(batch.source_options.get("s3_mode", self.settings.s3_mode)),
            limits=Limits(rpm=self.settings.rpm or spec.rpm, tpm=self.settings.tpm or spec.tpm),
            fingerprint=options.fingerprint(api=batch.api),
            cache=CachePolicy.from_source_options(batch.source_options, options.model),
            documents=DocumentOptions.from_source_options(batch.source_options),
        )
        self._plans[batch_id] = plan
        return plan

    def close(self) -> None:
        if "spool" in self.__dict__:
            self.spool.stop()
        if "leases" in self.__dict__:
            self.leases.stop()
        if "cache" in self.__dict__:
            self.cache.close()
        if "documents" in self.__dict__:
            self.documents.close()
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if "store" in self.__dict__:
            self.store.engine.dispose()

    def after_fork(self) -> None:
        """In a freshly forked child: drop the parent's pooled connections, keep the config."""
        if "store" in self.__dict__:
            self.store.engine.dispose(close=False)
        self.__dict__.pop("leases", None)
        self.__dict__.pop("spool", None)
        self.__dict__.pop("breaker", None)
        self.__dict__.pop("cache", None)
        self.__dict__.pop("documents", None)
        self._clients.clear()


def memory_runtime(settings: Settings, store: Store | None = None) -> Runtime:
    """A runtime whose throttle lives in this process: the embedded mode (no Redis)."""
    return Runtime(
        settings, throttle_backend=MemoryBackend(), store=store, breaker_kv=MemoryKeyValue()
    )
