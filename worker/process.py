"""The story of one item: claim it, load its image, throttle, call Qwen-OCR, persist.

Every step is a named method; the Celery task and the embedded runner both call
:meth:`ItemProcessor.process`, so they share one code path.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import tenacity
from sqlalchemy.exc import DBAPIError

from qocr.models.base import utcnow
from qocr.models.document_pages import ExpansionResult
from qocr.models.records import AttemptRecord, ClaimedItem, ResultRecord
from qocr.models.result_cache import reusable
from qocr.models.states import AttemptOutcome
from qocr.qwen.errors import ImageError, QwenError, RateLimitError
from qocr.qwen.images import PreparedImage, prepare_image
from qocr.qwen.result import OCRResult, Usage
from qocr.qwen.retry import retry_policy
from qocr.worker import metrics
from qocr.worker.breaker import CallOutcome
from qocr.worker.cache import Lookup, Verdict
from qocr.worker.estimates import TokenEstimator
from qocr.worker.fetch import FetchError
from qocr.worker.limits import LIMITS
from qocr.worker.runtime import BatchPlan, Runtime
from qocr.worker.throttle import Slot

log = logging.getLogger(__name__)

# In-process retries are for blips: a few tries, short sleeps (LIMITS.in_process_*). Anything
# longer goes back to SQL with a retry time, so no worker slot sleeps through a long back-off.
LATER_BASE_SECONDS = 5.0
LATER_CAP_SECONDS = 300.0
# A server error or a broken connection waits at most this long in SQL: when the provider
# is back, the fleet is back at full rate within it (the breaker guards the outage itself).
SERVER_ERROR_CAP_SECONDS = 30.0
# An item found at claim time with its attempts spent: its last try never ended normally
# (its worker died, or the try broke in a way the worker could not record).
WORKER_ERROR = "worker_error"


class Outcome(StrEnum):
    """What :meth:`ItemProcessor.process` did with an item."""

    SKIPPED = "skipped"  # not ours: already claimed, finished, cancelled or not yet due
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY_LATER = "retry_later"
    STOPPED = "stopped"  # the batch was stopped by this item's error
    LEASE_LOST = "lease_lost"
    KEPT = "kept"  # paid result kept on disk until the database answers again
    EXPANDED = "expanded"  # a document: its pages were added to the batch as items
    CANCELLED = "cancelled"  # a document whose batch had stopped: no page was added


class _NoSlot(Exception):
    """No call may go now: no throttle slot within its max wait, or the breaker is open."""

    def __init__(self, wait: float, why: str = "no throttle slot") -> None:
        super().__init__(f"{why} for {wait:.1f} s")
        self.wait = wait


class _NoCall(Exception):
    """The call could not be counted before leaving: the lease moved on, or none is left."""


@dataclass
class _Try:
    """The call of one item being made now: its counted number and when it started."""

    number: int | None = None
    started: datetime = field(default_factory=utcnow)
    # Set once the item's fate is written (result saved or kept, failed, back in the queue):
    # whatever breaks after that must not write over it.
    settled: bool = False


class ItemProcessor:
    """Processes items with the collaborators of one :class:`Runtime`."""

    def __init__(self, runtime: Runtime, sleep: Any = time.sleep) -> None:
        self.rt = runtime
        self._sleep = sleep
        self._estimates = TokenEstimator()

    def process(self, item_id: int) -> Outcome:
        item = self.rt.store.claim(item_id, uuid.uuid4().hex, self.rt.leases.lease_until())
        if item is None:
            return Outcome.SKIPPED
        with self.rt.leases.holding(item):
            if item.attempts >= self.rt.settings.max_attempts:
                return self._spent(item)
            current = _Try()
            try:
                return self._process_claimed(item, current)
            except Exception as exc:
                # A bug or an infrastructure failure (database, Redis, a time limit) mid-item:
                # give the item back for a later try, counted like any try, so an item that
                # keeps breaking its worker runs out of attempts instead of looping.
                log.exception("item %s: unexpected error", item.item_id)
                self._give_back(item, current, exc)
                raise

    def _spent(self, item: ClaimedItem) -> Outcome:
        message = (
            f"{item.attempts} tries made (QOCR_MAX_ATTEMPTS={self.rt.settings.max_attempts}); "
            "the last one did not end normally (its worker died or broke)"
        )
        self.rt.store.fail(item, WORKER_ERROR, message)
        metrics.record_finished("failed", WORKER_ERROR)
        return Outcome.FAILED

    def _process_claimed(self, item: ClaimedItem, current: _Try) -> Outcome:
        plan = self.rt.plan(item.batch_id)
        try:
            # A document becomes its pages (no call); a page is rendered; None: an image.
            loaded = self.rt.documents.load(item, plan.options, plan.documents)
            if isinstance(loaded, ExpansionResult):
                return Outcome(loaded.outcome.value)
            image, sha256 = self._load_image(item, plan) if loaded is None else loaded
        except FetchError as exc:
            if exc.retryable and item.attempts + 1 < self.rt.settings.max_attempts:
                attempt = self._local_attempt(exc.code, exc.message, AttemptOutcome.RETRY)
                later = utcnow() + timedelta(seconds=later_seconds(item.attempts + 1, None))
                self.rt.store.retry_later(item, attempt, later)
                return Outcome.RETRY_LATER
            self.rt.store.fail(item, exc.code, exc.message)
            metrics.record_finished("failed", exc.code)
            return Outcome.FAILED
        except ImageError as exc:
            self.rt.store.fail(item, exc.code, exc.message)
            metrics.record_finished("failed", exc.code)
            return Outcome.FAILED
        # A paid result of the same image and request ends the item here, with no call.
        with self.rt.cache.before_call(item, sha256, plan.cache, plan.fingerprint) as lookup:
            if lookup.verdict is not Verdict.CALL:
                return Outcome(lookup.verdict.value)
            return self._call_and_persist(item, plan, image, lookup, current)

    def _load_image(self, item: ClaimedItem, plan: BatchPlan) -> tuple[PreparedImage, str | None]:
        raw = self.rt.fetcher.fetch(item.source, plan.s3_mode)
        if isinstance(raw, bytes):
            return prepare_image(raw), hashlib.sha256(raw).hexdigest()
        return prepare_image(raw), None

    def _call_and_persist(
        self,
        item: ClaimedItem,
        plan: BatchPlan,
        image: PreparedImage,
        lookup: Lookup,
        current: _Try,
    ) -> Outcome:
        estimate = self._estimates.estimate(plan.options, image.info).total
        model = plan.options.model
        calls = 0

        def call_once() -> tuple[OCRResult, float, Slot]:
            nonlocal calls
            breaker_wait = self.rt.breaker.before_call(model)
            if breaker_wait > 0:
                raise _NoSlot(breaker_wait, "the provider is failing; circuit open")
            # Ready before the slot is taken: a process's first client takes 0.1 s to build.
            client = self.rt.client(plan.api)
            slot = self.rt.throttle.reserve(model, plan.limits, estimate)
            if not slot.granted:
                raise _NoSlot(slot.wait)
            current.started = utcnow()
            # Counted and on record before the request leaves, whatever happens after; done
            # while the slot is still ahead, so the request leaves on time.
            current.number = self.rt.store.begin_call(
                item, current.started, self.rt.worker_name, self.rt.settings.max_attempts
            )
            if current.number is None:
                raise _NoCall()
            slot = self.rt.throttle.wait_for(slot, self._sleep)
            metrics.record_throttle_wait(model, slot.wait)
            current.started = utcnow()  # when the request left
            calls += 1
            clock = time.perf_counter()
            try:
                result = client.recognize_with(image, plan.options)
            except RateLimitError as exc:
                metrics.record_call(model, metrics.call_outcome(exc), time.perf_counter() - clock)
                _bookkeeping(self.rt.throttle.penalize, model, exc.retry_after, slot)
                raise
            except QwenError as exc:
                metrics.record_call(model, metrics.call_outcome(exc), time.perf_counter() - clock)
                _bookkeeping(self.rt.breaker.record, model, breaker_outcome(exc))
                raise
            metrics.record_call(model, "ok", time.perf_counter() - clock)
            _bookkeeping(self.rt.breaker.record, model, CallOutcome.OK)
            return result, (time.perf_counter() - clock) * 1000, slot

        def record_blip(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            assert isinstance(error, QwenError)
            self.rt.store.record_retry(item, self._attempt(error, AttemptOutcome.RETRY, current))
            current.number = None

        attempts_left = self.rt.settings.max_attempts - item.attempts
        policy = retry_policy(
            max_attempts=max(1, min(LIMITS.in_process_attempts, attempts_left)),
            max_total_seconds=LIMITS.in_process_budget_seconds,
            max_single_wait_seconds=LIMITS.in_process_max_sleep_seconds,
            sleep=self._sleep,
        ).copy(before_sleep=record_blip)
        try:
            result, latency_ms, slot = policy(call_once)
        except _NoSlot as no_slot:
            # No call was made in this try: the item waits without losing an attempt.
            self.rt.store.release(item, utcnow() + timedelta(seconds=no_slot.wait))
            return Outcome.RETRY_LATER
        except _NoCall:
            log.warning("item %s: lease lost before its call could be counted", item.item_id)
            return Outcome.LEASE_LOST
        except QwenError as error:
            return self._handle_error(item, plan, error, item.attempts + calls, current)

        record = result_record(result, latency_ms, lookup.image_key, plan.fingerprint)
        attempt = AttemptRecord(
            started_at=current.started,
            ended_at=utcnow(),
            outcome=AttemptOutcome.SUCCEEDED,
            http_status=200,
            request_id=result.request_id,
            worker=self.rt.worker_name,
            number=current.number,
        )
        # The paid answer is saved before any bookkeeping that could fail (Redis away).
        outcome = self._save(item, attempt, record)
        current.settled = True
        # Copies of this image waiting on the cache will find this result: tell them.
        lookup.saved = outcome is Outcome.SUCCEEDED and reusable(record.finish_reason)
        usage = result.usage
        if usage is not None:
            metrics.record_tokens(model, usage.input_tokens, usage.output_tokens)
            _bookkeeping(self.rt.throttle.settle, slot, usage.total_tokens)
            self._estimates.learn(plan.options, image.info, usage)
        return outcome

    def _save(self, item: ClaimedItem, attempt: AttemptRecord, record: ResultRecord) -> Outcome:
        """Save a paid result; never throw it away to pay for it again."""
        try:
            # The lease may have moved on (this worker was slow to renew): the answer is
            # still good, and the item may not have finished yet.
            if self.rt.store.succeed(item, attempt, record) or self.rt.store.save_kept_result(
                item, attempt, record
            ):
                metrics.record_finished("succeeded")
                return Outcome.SUCCEEDED
        except DBAPIError:
            # The database is away: keep the answer on disk, save it when SQL is back.
            log.warning("item %s: result could not be saved; kept", item.item_id, exc_info=True)
            self.rt.leases.keep_holding(item)
            self.rt.spool.keep(item, attempt, record)
            return Outcome.KEPT
        log.warning("item %s had finished elsewhere; this result is not kept", item.item_id)
        return Outcome.LEASE_LOST

    def _handle_error(
        self,
        item: ClaimedItem,
        plan: BatchPlan,
        error: QwenError,
        attempts_made: int,
        current: _Try,
    ) -> Outcome:
        if error.stops_batch:
            self.rt.store.fail(
                item,
                error.code,
                error.message,
                self._attempt(error, AttemptOutcome.STOPPED, current),
            )
            reason = f"{error.code}: {error.message}"
            cancelled = self.rt.store.stop_batch(plan.batch_id, reason, code="batch_stopped")
            metrics.record_finished("failed", error.code)
            metrics.record_finished("cancelled", "batch_stopped", cancelled)
            log.error("batch %s stopped (%s); %d items cancelled", plan.batch_id, reason, cancelled)
            return Outcome.STOPPED
        if not error.retryable or attempts_made >= self.rt.settings.max_attempts:
            self.rt.store.fail(
                item,
                error.code,
                error.message,
                self._attempt(error, AttemptOutcome.FAILED, current),
            )
            metrics.record_finished("failed", error.code)
            return Outcome.FAILED
        not_before = utcnow() + timedelta(seconds=later_seconds(attempts_made, error))
        self.rt.store.retry_later(
            item, self._attempt(error, AttemptOutcome.RETRY, current), not_before
        )
        return Outcome.RETRY_LATER

    def _attempt(self, error: QwenError, outcome: AttemptOutcome, current: _Try) -> AttemptRecord:
        return AttemptRecord(
            started_at=current.started,
            ended_at=utcnow(),
            outcome=outcome,
            http_status=error.status,
            error_code=error.code,
            error_message=error.message,
            request_id=error.request_id,
            retry_after=error.retry_after,
            worker=self.rt.worker_name,
            number=current.number,
        )

    def _local_attempt(
        self, code: str, message: str, outcome: AttemptOutcome, current: _Try | None = None
    ) -> AttemptRecord:
        """A try that ended on this side (a fetch that failed, a worker that broke)."""
        now = utcnow()
        return AttemptRecord(
            started_at=current.started if current else now,
            ended_at=now,
            outcome=outcome,
            error_code=code,
            error_message=message,
            worker=self.rt.worker_name,
            number=current.number if current else None,
            called=current is not None and current.number is not None,
        )

    def _give_back(self, item: ClaimedItem, current: _Try, exc: Exception) -> None:
        if current.settled:
            log.warning("item %s: error after its outcome was saved (%s)", item.item_id, exc)
            return
        message = f"{type(exc).__name__}: {exc}"
        attempt = self._local_attempt(WORKER_ERROR, message, AttemptOutcome.RETRY, current)
        try:
            later = utcnow() + timedelta(seconds=LATER_BASE_SECONDS)
            self.rt.store.retry_later(item, attempt, later)
        except Exception:
            # Still counted: the call (if any) was counted when it left, and the reaper
            # counts a try that ends without a word when the lease runs out.
            log.warning("item %s: could not give back (%s); the reaper will", item.item_id, exc)


def _bookkeeping(action: Callable[..., object], *args: object) -> None:
    """Throttle and breaker upkeep after a call: a Redis that is away must not undo a paid
    answer (or turn a provider error into a worker error), so a failure here is logged."""
    try:
        action(*args)
    except Exception:
        log.warning("throttle/breaker upkeep failed (Redis away?)", exc_info=True)


def breaker_outcome(error: QwenError) -> CallOutcome:
    """What an error says about the provider's health (for the circuit breaker)."""
    if isinstance(error, RateLimitError):
        return CallOutcome.NEUTRAL
    if error.status is None or error.status >= 500:
        return CallOutcome.FAILED if error.retryable else CallOutcome.OK
    return CallOutcome.OK


def later_seconds(attempt: int, error: QwenError | None) -> float:
    """How long an item waits in SQL before its next try: exponential, with a floor.

    Half the delay is fixed and half is jitter, so a burst of failures spreads out but no
    retry comes at once (a full-jitter delay may be 0, and an outage then spends attempts in
    seconds). A server error waits at most :data:`SERVER_ERROR_CAP_SECONDS`; never sooner
    than a Retry-After.
    """
    server_side = error is not None and (error.status is None or error.status >= 500)
    cap = SERVER_ERROR_CAP_SECONDS if server_side else LATER_CAP_SECONDS
    ceiling = min(cap, LATER_BASE_SECONDS * 2.0 ** max(attempt - 1, 0))
    delay = ceiling / 2 + random.uniform(0, ceiling / 2)
    retry_after = error.retry_after if error is not None else None
    return max(delay, retry_after or 0.0)


def result_record(
    result: OCRResult, latency_ms: float, image_sha256: str | None, fingerprint: str
) -> ResultRecord:
    """What the store keeps of a successful call."""
    usage = result.usage or Usage()
    words = None
    if result.words_info is not None:
        words = [
            {"text": w.text, "location": list(w.location), "rotate_rect": list(w.rotate_rect)}
            for w in result.words_info
        ]
    return ResultRecord(
        text=result.text,
        kv_result=result.kv_result,
        words_info=words,
        # Fenced HTML/LaTeX bodies are in the text already; keep decoded JSON only.
        parsed=None if isinstance(result.parsed, str) else result.parsed,
        finish_reason=result.finish_reason,
        request_id=result.request_id,
        model=result.model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        image_tokens=usage.image_tokens,
        total_tokens=usage.total_tokens,
        latency_ms=latency_ms,
        image_sha256=image_sha256,
        options_fingerprint=fingerprint,
    )
