"""``qocr.Client``: qocr as a library, the layer the ``qocr`` command itself calls.

    from qocr import Client

    with Client() as client:                      # settings from QOCR_* / .env, as the CLI
        batch = client.submit(["s3://scans/2026-11/"], task="text_recognition",
                              idempotency_key="nightly-2026-11-30")
        for result in client.results(batch.id):   # streamed, one page of ids at a time
            print(result.source, result.text)

Names and fields are those of docs/cli-json.md (docs/python-api.md has the whole surface).
Errors are the ``QocrError`` family: :class:`NotFoundError` for an unknown id or key,
``RequestError`` / ``OptionsError`` / ``SourceError`` for bad input,
:class:`IdempotencyConflict` for a key reused with another request, ``ConfigError`` (and
``DatabaseUnavailable``) for the configuration and the database.

Reading needs neither Celery nor boto3: the broker is imported only by ``submit`` (to hand
the new batch to the workers at once) and ``run`` only imports the worker's code path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine

from qocr.api.records import (
    Batch,
    BatchStatus,
    CancelOutcome,
    Counts,
    ItemResult,
    Rejection,
    RetryOutcome,
    Submission,
)
from qocr.errors import NotFoundError, QocrError
from qocr.migrations.database import open_database
from qocr.models.base import utcnow
from qocr.models.batch_documents import batch_document, delivery_json, line_json
from qocr.models.report_records import BatchLine
from qocr.models.reports import Reports
from qocr.models.states import BatchState, ItemState
from qocr.models.store import Store
from qocr.models.submissions import Submissions
from qocr.models.webhooks import WebhookStore
from qocr.pricing import PriceTable, price_table
from qocr.scheduler.idempotency import submit_once
from qocr.scheduler.requests import request_from_options
from qocr.scheduler.schema_file import SchemaError, read_schema_file
from qocr.scheduler.submit import BatchRequest
from qocr.settings import Settings, get_settings

log = logging.getLogger(__name__)

# `run` sends its batch's webhook itself for this long; a delivery still pending after it
# is left in SQL, where the dispatcher of any `qocr worker` on the database picks it up.
RUN_NOTIFY_SECONDS = 30.0

Progress = Callable[[Counts], None]


class Client:
    """Submit, follow, export and control batches; one database connection pool.

    ``settings``: the configuration (default: read once from ``QOCR_*`` and ``.env``, like
    the command line). The database is opened on first use; ``close()`` (or ``with``)
    releases it.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else get_settings()
        self._engine: Engine | None = None

    # -- resources --------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The database, checked to answer with qocr's schema (a SQLite file is migrated)."""
        if self._engine is None:
            self._engine = open_database(self.settings)
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def _secret(self) -> str | None:
        key = self.settings.api_key
        return key.get_secret_value() if key else None

    def _reports(self) -> Reports:
        return Reports(self.engine)

    # -- creating batches -------------------------------------------------------------

    def submit(
        self,
        sources: Sequence[str] | str,
        *,
        idempotency_key: str | None = None,
        notify: str | None = None,
        dispatch: bool = True,
        **options: Any,
    ) -> Batch:
        """Create a batch of ``sources`` for the workers (``qocr submit``).

        ``options``: ``name``, ``api``, ``model``, ``task``, ``prompt``, ``schema`` (a dict,
        or a path to a JSON file), ``min_pixels``, ``max_pixels``, ``rotate``,
        ``max_tokens``, ``stream``, the sampling options, ``s3_mode``, ``mode``
        (``"batch"``: Model Studio's Batch API, half price, within 24 h), and for PDFs
        and TIFFs ``pages`` (``"1-3,7"``), ``max_pages``, ``dpi``. With
        ``idempotency_key``, the same key and request return the batch made the first
        time (``existing=True``) and a different request raises
        :class:`IdempotencyConflict`. ``notify``: a URL POSTed when the batch ends.
        ``dispatch``: hand the first items to the broker now (else a running worker's
        dispatcher does within a second).
        """
        request = self.request(sources, notify=notify, **options)
        store = Store(self.engine)
        submitted = submit_once(store, request, self.settings, idempotency_key)
        if dispatch and not submitted.existing:
            self._dispatch(store, submitted.batch_id)
        return replace(self.get(submitted.batch_id), existing=submitted.existing)

    def request(
        self, sources: Sequence[str] | str, *, notify: str | None = None, **options: Any
    ) -> BatchRequest:
        """The checked request ``submit`` and ``run`` would make (nothing is written)."""
        schema = options.get("schema")
        if isinstance(schema, str | Path):
            try:
                options["schema"] = read_schema_file(Path(schema))
            except SchemaError as exc:
                raise SchemaError(f"schema {schema}: {exc.message}", code=exc.code) from None
        items = [sources] if isinstance(sources, str) else list(sources)
        return request_from_options(self.settings, items, {**options, "notify": notify})

    def _dispatch(self, store: Store, batch_id: int) -> None:
        from qocr.worker.app import create_app
        from qocr.worker.publish import publish_now

        app = create_app(self.settings)
        try:
            # Under the fleet's lock: a running worker's dispatcher, if any, publishes instead.
            publish_now(app, self.settings, store)
        except Exception as exc:  # the batch is safe in SQL; a worker's dispatcher sends it
            log.warning("batch %s saved but not dispatched yet (%s)", batch_id, type(exc).__name__)
        finally:
            app.close()

    def run(
        self,
        sources: Sequence[str] | str,
        *,
        concurrency: int = 8,
        notify: str | None = None,
        on_start: Callable[[Batch], None] | None = None,
        on_progress: Progress | None = None,
        **options: Any,
    ) -> Batch:
        """Create a batch and process it in this process, with no broker (``qocr run``).

        Returns the batch once every item has ended. ``on_start`` gets the new batch,
        ``on_progress`` its counts about twice a second. With ``notify``, the end is
        POSTed from here (tried for up to 30 s; then left to any worker's dispatcher).
        """
        from qocr.scheduler.notify import Notifier
        from qocr.worker.embedded import run_batch
        from qocr.worker.process import ItemProcessor
        from qocr.worker.runtime import memory_runtime

        self.settings.require_api_key()
        request = self.request(sources, notify=notify, **options)
        if request.mode != "realtime":
            raise QocrError(
                "run processes a batch in this process, realtime only: submit a batch-mode "
                "batch to the workers (qocr submit --mode batch)",
                code="batch_mode_unsupported",
            )
        store = Store(self.engine)
        runtime = memory_runtime(self.settings, store)
        try:
            submitted = submit_once(store, request, self.settings)
            if on_start is not None:
                on_start(self.get(submitted.batch_id))

            def progress(counts: dict[ItemState, int]) -> None:
                if on_progress is not None:
                    on_progress(Counts(**{state.value: n for state, n in counts.items()}))

            run_batch(ItemProcessor(runtime), submitted.batch_id, concurrency, progress)
        finally:
            runtime.close()
        if request.notify_url is not None:
            notifier = Notifier.from_settings(self.settings, self.engine)
            try:
                notifier.deliver_now(submitted.batch_id, RUN_NOTIFY_SECONDS)
            finally:
                notifier.close()
        return self.get(submitted.batch_id)

    # -- reading ----------------------------------------------------------------------

    def get(self, batch_id: int) -> Batch:
        """One batch with its counts (the line ``qocr status`` lists)."""
        reports = self._reports()
        info = reports.batch(batch_id)
        if info is None:
            raise NotFoundError(f"no batch with id {batch_id}")
        line = BatchLine(batch=info, counts=reports.counts(batch_id))
        return Batch.from_document(line_json(line, utcnow(), self._secret))

    def recent(self, limit: int = 20, state: BatchState | str | None = None) -> list[Batch]:
        """The most recent batches first (``qocr status``)."""
        from qocr.models.batch_documents import batch_list

        wanted = BatchState(state) if state is not None else None
        documents = batch_list(self._reports(), limit, wanted, self._secret)
        return [Batch.from_document(document) for document in documents]

    def status(self, batch_id: int, *, prices: PriceTable | None = None) -> BatchStatus:
        """Counts, progress, throughput, tokens, errors, cost and webhooks of one batch.

        ``prices``: default the catalog's, overridden by the ``[prices]`` table of the
        config file (``QOCR_CONFIG``) when it exists, for ``QOCR_REGION``.
        """
        return BatchStatus.from_document(self.status_document(batch_id, prices=prices))

    def status_document(self, batch_id: int, *, prices: PriceTable | None = None) -> dict[str, Any]:
        """:meth:`status` as the JSON document ``qocr status BATCH --json`` prints."""
        table = prices if prices is not None else self.default_prices()
        document = batch_document(self._reports(), batch_id, table, self._secret)
        if document is None:
            raise NotFoundError(f"no batch with id {batch_id}")
        deliveries = WebhookStore(self.engine).for_batch(batch_id)
        document["webhooks"] = [delivery_json(d, self._secret) for d in deliveries]
        return document

    def default_prices(self) -> PriceTable:
        return price_table(self.settings.region, config_file=Path(self.settings.config))

    def results(
        self, batch_id: int, *, state: ItemState | str | None = None
    ) -> Iterator[ItemResult]:
        """Every item of the batch with its result, in item id order, streamed (pages of
        1,000 ids, each a short transaction: memory does not grow with the batch)."""
        reports = self._reports()
        if reports.batch(batch_id) is None:
            raise NotFoundError(f"no batch with id {batch_id}")
        only = ItemState(state) if state is not None else None
        secret = self._secret
        return (ItemResult.from_row(row, secret) for row in reports.iter_items(batch_id, only))

    def get_by_key(self, idempotency_key: str) -> Submission:
        """What the submits with this key made: the batch, or why none was made."""
        submissions = Submissions(self.engine)
        keyed = submissions.batch_for_key(idempotency_key)
        rejected = submissions.latest_rejection(idempotency_key)
        if keyed is None and rejected is None:
            raise NotFoundError(f"no submission with key {idempotency_key!r}")
        batch = self.get(keyed.batch_id) if keyed is not None else None
        rejection = None
        if rejected is not None and (keyed is None or rejected.created_at > keyed.created_at):
            rejection = Rejection(rejected.code, rejected.message, rejected.created_at)
        return Submission(idempotency_key, batch, rejection)

    def wait(
        self, batch_id: int, *, timeout: float | None = None, poll_seconds: float = 1.0
    ) -> Batch:
        """Poll until the batch is no longer running (or ``timeout`` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            batch = self.get(batch_id)
            if batch.state != BatchState.RUNNING:
                return batch
            if deadline is not None and time.monotonic() >= deadline:
                return batch
            time.sleep(poll_seconds)

    # -- controlling batches ----------------------------------------------------------

    def retry(self, batch_id: int, codes: Sequence[str] | None = None) -> RetryOutcome:
        """Put the failed and cancelled items (whose last error is one of ``codes``, when
        given) back in the queue; running workers dispatch them within a second."""
        wanted = list(codes or [])
        reports = self._reports()
        self._require(reports, batch_id)
        eligible = reports.requeueable(batch_id, wanted)
        # requeue_failed also reopens the batch; with nothing to requeue it would be left
        # "running" with no item to finish it.
        requeued = Store(self.engine).requeue_failed(batch_id, wanted) if eligible else 0
        return RetryOutcome(batch_id, requeued, tuple(wanted), self._require(reports, batch_id))

    def cancel(self, batch_id: int) -> CancelOutcome:
        """Cancel a running batch: its queued items now; running items finish."""
        reports = self._reports()
        before = self._require(reports, batch_id)
        cancelled = Store(self.engine).cancel_batch(batch_id)
        state = self._require(reports, batch_id)
        running = reports.counts(batch_id)[ItemState.RUNNING]
        return CancelOutcome(batch_id, state, cancelled, running, previous_state=before)

    @staticmethod
    def _require(reports: Reports, batch_id: int) -> BatchState:
        batch = reports.batch(batch_id)
        if batch is None:
            raise NotFoundError(f"no batch with id {batch_id}")
        return batch.state
