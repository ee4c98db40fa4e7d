"""The result cache's pure parts: what a request is keyed on, a batch's policy, URL keys,
and what a reused result carries and saves."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pytest

from qocr.models.batch_documents import saved_json
from qocr.models.records import ResultRecord
from qocr.models.report_records import BatchInfo, BatchSummary, Usage
from qocr.models.result_cache import PaidResult, reuse_tallies
from qocr.models.states import BatchState, ItemState
from qocr.models.tallies import TallyKind
from qocr.pricing import price_table
from qocr.qwen.options import RecognizeOptions
from qocr.scheduler.cache_policy import (
    LATEST_ALIAS_MAX_AGE_SECONDS,
    CachePolicy,
    CachePolicyError,
    policy_from_values,
)
from qocr.scheduler.idempotency import request_sha256
from qocr.scheduler.requests import request_from_options
from qocr.scheduler.schedules import parse_schedule_book
from qocr.settings import Settings
from qocr.worker.cache import Verdict, head_validators, url_key
from qocr.worker.process import Outcome

LATEST = "qwen-vl-ocr-latest"
SNAPSHOT = "qwen-vl-ocr-2025-11-20"
SETTINGS = Settings(model=LATEST, api="compatible", s3_mode="inline")
BASE: dict[str, Any] = {"model": LATEST, "max_tokens": 100}
KIE: Final = "key_information_extraction"

# -- the request fingerprint -------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "qwen-vl-ocr"},
        {"model": SNAPSHOT},
        {"task": "table_parsing"},
        {"prompt": "read the total"},
        {"task": KIE, "result_schema": {"total": ""}},
        {"min_pixels": 100_000},
        {"max_pixels": 1_000_000},
        {"enable_rotate": True},
        {"enable_rotate": False},
        {"max_tokens": 101},
        {"temperature": 0.5},
        {"top_p": 0.5},
        {"top_k": 3},
        {"repetition_penalty": 1.2},
        {"presence_penalty": 0.5},
        {"seed": 3},
        {"stop": "END"},
        {"stop": ["END", "FIN"]},
    ],
)
def test_every_option_that_changes_the_answer_changes_the_fingerprint(
    changes: dict[str, Any],
) -> None:
    base = RecognizeOptions(**BASE)
    changed = RecognizeOptions(**{**BASE, **changes})
    assert changed.fingerprint() != base.fingerprint()
    assert changed.fingerprint(api="compatible") != base.fingerprint(api="compatible")


def test_how_the_answer_travels_and_the_accounts_grant_do_not_count() -> None:
    base = RecognizeOptions(**BASE)
    assert RecognizeOptions(**BASE, stream=True).fingerprint() == base.fingerprint()
    assert RecognizeOptions(**BASE, granted_max_tokens=8192).fingerprint() == base.fingerprint()


def test_the_api_counts_the_native_one_answers_a_task_differently() -> None:
    options = RecognizeOptions(model=LATEST, task=KIE, result_schema={"total": ""})
    assert options.fingerprint(api="compatible") != options.fingerprint(api="dashscope")
    assert options.fingerprint(api="compatible") != options.fingerprint()


def test_the_schemas_key_order_counts_and_equal_options_still_hash_equal() -> None:
    # The model answers in the schema's order (the CSV's columns follow it too); fingerprint
    # v1 sorted the schema's keys, so two such batches shared their answers.
    ordered = RecognizeOptions(model=LATEST, task=KIE, result_schema={"number": "", "total": ""})
    reversed_ = RecognizeOptions(model=LATEST, task=KIE, result_schema={"total": "", "number": ""})
    assert ordered.fingerprint() != reversed_.fingerprint()
    assert ordered == reversed_ and hash(ordered) == hash(reversed_)


def test_the_fingerprint_is_pinned_to_its_canonical_form() -> None:
    options = RecognizeOptions(model=LATEST, task=KIE, result_schema={"b": "", "a": ""})
    canonical = (
        '{"api":"dashscope","model":"qwen-vl-ocr-latest",'
        '"result_schema":"{\\"b\\":\\"\\",\\"a\\":\\"\\"}",'
        '"task":"key_information_extraction","v":2}'
    )
    assert options.fingerprint(api="dashscope") == hashlib.sha256(canonical.encode()).hexdigest()


# -- a batch's policy ------------------------------------------------------------------


def test_latest_aliases_are_bounded_by_default_snapshots_are_not() -> None:
    assert CachePolicy.for_model(LATEST) == CachePolicy(True, LATEST_ALIAS_MAX_AGE_SECONDS, False)
    assert LATEST_ALIAS_MAX_AGE_SECONDS == 30 * 86400
    assert CachePolicy.for_model(SNAPSHOT) == CachePolicy(True, None, False)
    assert CachePolicy.for_model(LATEST, max_age_seconds=60).max_age_seconds == 60


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, CachePolicy(True, LATEST_ALIAS_MAX_AGE_SECONDS, False)),
        ({"cache": False}, CachePolicy(False, LATEST_ALIAS_MAX_AGE_SECONDS, False)),
        ({"max_age": "7d"}, CachePolicy(True, 7 * 86400, False)),
        ({"max_age": "90m", "urls": True}, CachePolicy(True, 5400, True)),
        ({"max_age": "0s"}, CachePolicy(True, 0, False)),
        ({"max_age": 3600}, CachePolicy(True, 3600, False)),
        ({"max_age": 12.7}, CachePolicy(True, 12, False)),
    ],
)
def test_policy_values(values: dict[str, Any], expected: CachePolicy) -> None:
    assert policy_from_values(LATEST, **values) == expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_age": "soon"}, "not a duration"),
        ({"max_age": "7 days"}, "not a duration"),
        ({"max_age": -1}, "non-negative"),
        ({"max_age": float("inf")}, "finite"),
        ({"max_age": True}, "duration like"),
        ({"cache": "yes"}, "cache must be true or false"),
        ({"urls": 1}, "cache_urls must be true or false"),
    ],
)
def test_bad_policy_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(CachePolicyError, match=message) as caught:
        policy_from_values(LATEST, **values)
    assert caught.value.code == "cache_option_invalid"


def test_the_policy_rides_in_source_options_and_old_batches_get_the_default() -> None:
    policy = CachePolicy(enabled=False, max_age_seconds=None, urls=True)
    stored = json.loads(json.dumps({"s3_mode": "inline", **policy.source_options()}))
    assert CachePolicy.from_source_options(stored, LATEST) == policy
    assert CachePolicy.from_source_options({"s3_mode": "inline"}, LATEST) == (
        CachePolicy.for_model(LATEST)
    )


def test_cache_options_change_the_batch_not_the_request_fingerprint() -> None:
    sources = ["s3://scans/2026/"]
    plain = request_from_options(SETTINGS, sources, {})
    tuned = request_from_options(
        SETTINGS, sources, {"cache": False, "cache_max_age": "1d", "cache_urls": True}
    )
    assert tuned.cache == CachePolicy(False, 86400, True)
    assert tuned.options.fingerprint(api="compatible") == plain.options.fingerprint(
        api="compatible"
    )
    stored = tuned.spec().source_options
    assert stored["s3_mode"] == "inline"
    assert CachePolicy.from_source_options(stored, LATEST) == tuned.cache
    assert (stored["cache"], stored["cache_max_age_seconds"], stored["cache_urls"]) == (
        False,
        86400,
        True,
    )
    # An idempotency key names the whole request: another cache policy is another request.
    assert request_sha256(tuned) != request_sha256(plain)


def test_schedules_take_the_same_cache_keys(tmp_path: Path) -> None:
    table = {"every": "1h", "sources": ["s3://scans/"], "model": SNAPSHOT}
    book = parse_schedule_book(
        {
            "schedules": {
                "plain": table,
                "tuned": {**table, "cache": False, "cache_max_age": "2d", "cache_urls": True},
            }
        },
        SETTINGS,
        tmp_path,
        "qocr.toml",
    )
    slot = datetime(2026, 11, 30, tzinfo=UTC)
    assert book.get("plain").request(slot).cache_policy() == CachePolicy(True, None, False)
    assert book.get("tuned").request(slot).cache_policy() == CachePolicy(False, 172800, True)


def test_every_verdict_that_ends_a_try_is_an_outcome_of_the_item_processor() -> None:
    ending = [verdict for verdict in Verdict if verdict is not Verdict.CALL]
    assert [Outcome(verdict.value) for verdict in ending] == [
        Outcome.SUCCEEDED,
        Outcome.RETRY_LATER,
        Outcome.LEASE_LOST,
    ]


# -- URL keys --------------------------------------------------------------------------


def _head_client(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_a_url_is_keyed_with_the_validators_a_head_returns() -> None:
    url = "https://cdn.example.com/scan.png?sig=abc"

    def answers(request: httpx.Request) -> httpx.Response:
        assert request.method == "HEAD"
        return httpx.Response(200, headers={"ETag": '"v1"', "Last-Modified": "Mon, 30 Nov"})

    validators = head_validators(_head_client(answers), url)
    assert validators == 'etag="v1"\nlast-modified=Mon, 30 Nov'
    assert url_key(url, validators) != url_key(url, 'etag="v2"\nlast-modified=Mon, 30 Nov')
    assert url_key(url, validators) != url_key(url + "&x=1", validators)
    assert url_key(url, "") == url_key(url, "")


@pytest.mark.parametrize(
    "answer",
    [httpx.Response(405), httpx.Response(200), httpx.ConnectError("refused")],
)
def test_a_url_whose_head_does_not_answer_is_keyed_by_the_url_alone(answer: Any) -> None:
    def answers(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    assert head_validators(_head_client(answers), "https://cdn.example.com/a.png") == ""


# -- a reused result -------------------------------------------------------------------

PAID = PaidResult(
    item_id=41,
    text="INV-1",
    kv_result={"number": "INV-1"},
    words_info=None,
    parsed={"number": "INV-1"},
    finish_reason="stop",
    request_id="req-41",
    model=LATEST,
    input_tokens=900,
    output_tokens=40,
    image_tokens=700,
    total_tokens=940,
    created_at=datetime(2026, 11, 29, tzinfo=UTC),
)


def test_a_reused_result_bills_nothing_and_keeps_the_originals_counts() -> None:
    record = PAID.reused("ab" * 32, "cd" * 32)
    assert (record.text, record.kv_result, record.finish_reason) == (
        "INV-1",
        {"number": "INV-1"},
        "stop",
    )
    billed = (record.input_tokens, record.output_tokens, record.image_tokens, record.total_tokens)
    assert billed == (0, 0, 0, 0)
    assert record.cached_from == 41
    assert (
        record.original_input_tokens,
        record.original_output_tokens,
        record.original_image_tokens,
        record.original_total_tokens,
    ) == (900, 40, 700, 940)
    assert reuse_tallies(record) == {
        (TallyKind.CACHED, ""): 1,
        (TallyKind.SAVED_INPUT_TOKENS, LATEST): 900,
        (TallyKind.SAVED_OUTPUT_TOKENS, LATEST): 40,
    }


def test_a_paid_result_adds_no_cache_tallies() -> None:
    assert reuse_tallies(ResultRecord(text="x", input_tokens=5, model=LATEST)) == {}


def test_the_saving_is_priced_at_the_originals_tokens() -> None:
    info = BatchInfo(
        id=1,
        name="n",
        state=BatchState.COMPLETED,
        stop_reason=None,
        api="compatible",
        model=LATEST,
        task=None,
        result_schema=None,
        total=3,
        created_at=PAID.created_at,
        updated_at=PAID.created_at,
        finished_at=PAID.created_at,
    )
    saved = {LATEST: Usage(2_000_000, 1_000_000), "qwen-vl-ocr": Usage(1_000_000, 0)}
    summary = BatchSummary(
        batch=info,
        counts=dict.fromkeys(ItemState, 0),
        usage=Usage(),
        usage_by_model={},
        finish_reasons={},
        errors={},
        cached=3,
        saved_by_model=saved,
    )
    prices = price_table("intl")
    expected = prices.price(LATEST).cost(2_000_000, 1_000_000) + prices.price("qwen-vl-ocr").cost(
        1_000_000, 0
    )
    assert saved_json(summary, prices) == {
        "currency": "USD",
        "region": "intl",
        "usd": round(expected, 6),
        "input_tokens": 3_000_000,
        "output_tokens": 1_000_000,
    }
    assert expected > 0
