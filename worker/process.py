"""The story of one item: claim it, load its image, throttle, call Qwen-OCR, persist.

Every step is a named method; the Celery task and the embedded runner both call
:meth:`ItemProcessor.process`, so they share one code path.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import tenacity

from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, ClaimedItem, ResultRecord
from qocr.models.states import AttemptOutcome
from qocr.qwen.errors import ImageError, QwenError, RateLimitError
from qocr.qwen.images import PreparedImage, prepare_image
from qocr.qwen.result import OCRResult, Usage
from qocr.qwen.retry import backoff_seconds, retry_policy
from qocr.qwen.tokens import image_tokens, max_image_tokens, prompt_tokens
from qocr.worker.fetch import FetchError
from qocr.worker.limits import LIMITS
from qocr.worker.runtime import BatchPlan, Runtime

log = logging.getLogger(__name__)

# In-process retries are for blips: a few tries, short sleeps (LIMITS.in_process_*). Anything
# longer goes back to SQL with a retry time, so no worker slot sleeps through a long back-off.
LATER_BASE_SECONDS = 5.0
LATER_CAP_SECONDS = 300.0
# Until real usage is seen, assume this many output tokens per call for the TPM estimate.
INITIAL_OUTPUT_ESTIMATE = 400


class Outcome(StrEnum):
    """What :meth:`ItemProcessor.process` did with an item."""

    SKIPPED = "skipped"  # not ours: already claimed, finished, cancelled or not yet due
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY_LATER = "retry_later"
    STOPPED = "stopped"  # the batch was stopped by this item's error
    LEASE_LOST = "lease_lost"


class _NoSlot(Exception):
    """The throttle has no slot within its max wait."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"no throttle slot for {wait:.1f} s")
        self.wait = wait


class ItemProcessor:
    """Processes items with the collaborators of one :class:`Runtime`."""

    def __init__(self, runtime: Runtime, sleep: Any = time.sleep) -> None:
        self.rt = runtime
        self._sleep = sleep
        self._output_estimate: dict[str, float] = {}
        self._url_image_estimate: dict[str, float] = {}

    def process(self, item_id: int) -> Outcome:
        item = self.rt.store.claim(item_id, uuid.uuid4().hex, self.rt.leases.lease_until())
        if item is None:
            return Outcome.SKIPPED
        with self.rt.leases.holding(item):
            try:
                return self._process_claimed(item)
            except Exception as exc:
                # A bug or an infrastructure failure (database, Redis) mid-item: give the item
                # back for a later try instead of leaving it to the lease reaper.
                log.exception("item %s: unexpected error", item.item_id)
                self._give_back(item, exc)
                raise

    def _process_claimed(self, item: ClaimedItem) -> Outcome:
        plan = self.rt.plan(item.batch_id)
        try:
            image, sha256 = self._load_image(item, plan)
        except FetchError as exc:
            if exc.retryable:
                self.rt.store.release(item, utcnow() + timedelta(seconds=LATER_BASE_SECONDS))
                return Outcome.RETRY_LATER
            self.rt.store.fail(item, exc.code, exc.message)
            return Outcome.FAILED
        except ImageError as exc:
            self.rt.store.fail(item, exc.code, exc.message)
            return Outcome.FAILED
        return self._call_and_persist(item, plan, image, sha256)

    def _load_image(self, item: ClaimedItem, plan: BatchPlan) -> tuple[PreparedImage, str | None]:
        raw = self.rt.fetcher.fetch(item.source, plan.s3_mode)
        if isinstance(raw, bytes):
            return prepare_image(raw), hashlib.sha256(raw).hexdigest()
        return prepare_image(raw), None

    def _estimate(self, plan: BatchPlan, image: PreparedImage) -> int:
        options = plan.options
        if image.info is None:
            # A URL's size is unknown before the call: the largest image the model takes,
            # until answers have shown what this model's URL images cost.
            pixels = int(
                self._url_image_estimate.get(
                    options.model, max_image_tokens(options.model, options.max_pixels)
                )
            )
        else:
            pixels = image_tokens(
                image.info.width,
                image.info.height,
                options.model,
                options.min_pixels,
                options.max_pixels,
            )
        output = self._output_estimate.get(options.model, INITIAL_OUTPUT_ESTIMATE)
        return pixels + prompt_tokens(options) + int(min(output, options.effective_max_tokens()))

    def _learn(self, model: str, image: PreparedImage, usage: Usage) -> None:
        """Moving averages of what calls really cost, for the next estimates."""
        previous = self._output_estimate.get(model, INITIAL_OUTPUT_ESTIMATE)
        self._output_estimate[model] = 0.8 * previous + 0.2 * usage.output_tokens
        if image.info is None and usage.image_tokens:
            seen = self._url_image_estimate.get(model, float(usage.image_tokens))
            self._url_image_estimate[model] = 0.8 * seen + 0.2 * usage.image_tokens

    def _call_and_persist(
        self, item: ClaimedItem, plan: BatchPlan, image: PreparedImage, sha256: str | None
    ) -> Outcome:
        estimate = self._estimate(plan, image)
        model = plan.options.model
        calls = 0
        started = utcnow()

        def call_once() -> tuple[OCRResult, float]:
            nonlocal calls, started
            grant = self.rt.throttle.reserve(model, plan.limits, estimate)
            if not grant.granted:
                raise _NoSlot(grant.wait)
            if grant.wait > 0:
                self._sleep(grant.wait)
            calls += 1
            started = utcnow()
            clock = time.perf_counter()
            try:
                result = self.rt.client(plan.api).recognize_with(image, plan.options)
            except RateLimitError as exc:
                self.rt.throttle.penalize(model, exc.retry_after)
                raise
            return result, (time.perf_counter() - clock) * 1000

        def record_blip(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            assert isinstance(error, QwenError)
            self.rt.store.record_retry(item, self._attempt(error, AttemptOutcome.RETRY, started))

        attempts_left = self.rt.settings.max_attempts - item.attempts
        policy = retry_policy(
            max_attempts=max(1, min(LIMITS.in_process_attempts, attempts_left)),
            max_total_seconds=LIMITS.in_process_budget_seconds,
            max_single_wait_seconds=LIMITS.in_process_max_sleep_seconds,
            sleep=self._sleep,
        ).copy(before_sleep=record_blip)
        try:
            result, latency_ms = policy(call_once)
        except _NoSlot as no_slot:
            self.rt.store.release(item, utcnow() + timedelta(seconds=no_slot.wait))
            return Outcome.RETRY_LATER
        except QwenError as error:
            return self._handle_error(item, plan, error, item.attempts + calls, started)

        usage = result.usage
        if usage is not None:
            self.rt.throttle.settle(model, plan.limits, estimate, usage.total_tokens)
            self._learn(model, image, usage)
        record = result_record(result, latency_ms, sha256, plan.options.fingerprint())
        attempt = AttemptRecord(
            started_at=started,
            ended_at=utcnow(),
            outcome=AttemptOutcome.SUCCEEDED,
            http_status=200,
            request_id=result.request_id,
            worker=self.rt.worker_name,
        )
        if self.rt.store.succeed(item, attempt, record):
            return Outcome.SUCCEEDED
        log.warning("item %s: lease lost before the result was saved", item.item_id)
        return Outcome.LEASE_LOST

    def _handle_error(
        self,
        item: ClaimedItem,
        plan: BatchPlan,
        error: QwenError,
        attempts_made: int,
        started: datetime,
    ) -> Outcome:
        if error.stops_batch:
            self.rt.store.fail(
                item,
                error.code,
                error.message,
                self._attempt(error, AttemptOutcome.STOPPED, started),
            )
            reason = f"{error.code}: {error.message}"
            cancelled = self.rt.store.stop_batch(plan.batch_id, reason, code="batch_stopped")
            log.error("batch %s stopped (%s); %d items cancelled", plan.batch_id, reason, cancelled)
            return Outcome.STOPPED
        if not error.retryable or attempts_made >= self.rt.settings.max_attempts:
            self.rt.store.fail(
                item,
                error.code,
                error.message,
                self._attempt(error, AttemptOutcome.FAILED, started),
            )
            return Outcome.FAILED
        delay = backoff_seconds(
            attempts_made, error.retry_after, base=LATER_BASE_SECONDS, cap=LATER_CAP_SECONDS
        )
        not_before = utcnow() + timedelta(seconds=delay)
        self.rt.store.retry_later(
            item, self._attempt(error, AttemptOutcome.RETRY, started), not_before
        )
        return Outcome.RETRY_LATER

    def _attempt(
        self, error: QwenError, outcome: AttemptOutcome, started: datetime
    ) -> AttemptRecord:
        return AttemptRecord(
            started_at=started,
            ended_at=utcnow(),
            outcome=outcome,
            http_status=error.status,
            error_code=error.code,
            error_message=error.message,
            request_id=error.request_id,
            retry_after=error.retry_after,
            worker=self.rt.worker_name,
        )

    def _give_back(self, item: ClaimedItem, exc: Exception) -> None:
        try:
            self.rt.store.release(item, utcnow() + timedelta(seconds=LATER_BASE_SECONDS))
        except Exception:
            log.warning("item %s: could not release (%s); the reaper will", item.item_id, exc)


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
