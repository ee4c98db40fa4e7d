"""A submit's options as plain values: one set of names and rules for the Python API, the
broker task and the command line; the request hash behind idempotency keys."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from qocr.errors import QocrError
from qocr.qwen.errors import OptionsError
from qocr.scheduler.idempotency import check_key, request_sha256
from qocr.scheduler.requests import RequestError, request_from_options
from qocr.scheduler.schema_file import SchemaError
from qocr.scheduler.submit import BatchRequest
from qocr.settings import Settings

SETTINGS = Settings(model="qwen-vl-ocr-latest", api="compatible", s3_mode="inline")
SOURCES = ["s3://scans/2026/", "https://example.com/a.png"]


def request(sources: list[str] | None = None, **options: Any) -> BatchRequest:
    return request_from_options(SETTINGS, SOURCES if sources is None else sources, options)


def test_options_take_the_settings_defaults_and_the_cli_names() -> None:
    made = request(schema={"number": "", "total": ""}, rotate=True, stop=["END"], top_k=3)

    assert made.options.model == "qwen-vl-ocr-latest" and made.api == "compatible"
    assert made.options.task == "key_information_extraction"
    assert made.options.enable_rotate is True and made.options.stop == ("END",)
    assert (made.s3_mode, made.name, made.notify_url) == ("inline", None, None)


@pytest.mark.parametrize(
    ("sources", "options", "error", "message"),
    [
        (SOURCES, {"colour": "red"}, RequestError, "unknown option"),
        ([], {}, RequestError, "non-empty list"),
        ("s3://one/", {}, RequestError, "non-empty list"),
        ([""], {}, RequestError, "source #1 is not a non-empty string"),
        (SOURCES, {"api": "soap"}, RequestError, "api must be one of"),
        (SOURCES, {"s3_mode": "carrier-pigeon"}, RequestError, "s3_mode must be one of"),
        (SOURCES, {"notify": "ftp://hooks/x"}, RequestError, "http:// or https://"),
        (SOURCES, {"notify": "https://x/ y"}, RequestError, "http\\(s\\) URL"),
        (SOURCES, {"schema": []}, SchemaError, "schema: must be a non-empty JSON object"),
        (SOURCES, {"max_tokens": "many"}, OptionsError, "wrong type"),
        (SOURCES, {"seed": 2**31}, OptionsError, "out of range"),
        (SOURCES, {"task": "poetry"}, OptionsError, "poetry"),
    ],
)
def test_bad_values_are_refused_whoever_sent_them(
    sources: Any, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        request_from_options(SETTINGS, sources, options)


def test_a_remote_producer_may_name_urls_and_s3_only() -> None:
    assert request_from_options(SETTINGS, SOURCES, {}, local_sources=False).sources == SOURCES
    for source in ("/etc/passwd", "@/srv/list.txt", "scans/"):
        with pytest.raises(RequestError, match="worker's disk") as caught:
            request_from_options(SETTINGS, [source], {}, local_sources=False)
        assert caught.value.code == "source_not_allowed"


def test_the_same_request_has_the_same_hash_and_any_change_another() -> None:
    base = request_sha256(request(max_tokens=500))

    assert request_sha256(request(max_tokens=500)) == base
    for changed in (
        request(max_tokens=501),
        request(SOURCES[::-1], max_tokens=500),
        request(max_tokens=500, name="nightly"),
        request(max_tokens=500, notify="https://hooks.example.com/q"),
        request(max_tokens=500, s3_mode="presign"),
        request(max_tokens=500, api="dashscope"),
    ):
        assert request_sha256(changed) != base
    # How the account may be served is not the request.
    granted = request(max_tokens=500)
    options = replace(granted.options, granted_max_tokens=8192)
    assert request_sha256(replace(granted, options=options)) == base


def test_a_schema_in_another_key_order_is_another_request() -> None:
    first = request(schema={"number": "", "total": ""})
    second = request(schema={"total": "", "number": ""})

    assert request_sha256(first) != request_sha256(second)


def test_a_relative_path_hashes_as_the_absolute_one(tmp_path: Path) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        relative = request_sha256(request(["scans", "@list.txt"]))
    finally:
        os.chdir(cwd)
    absolute = request_sha256(request([str(tmp_path / "scans"), f"@{tmp_path / 'list.txt'}"]))

    assert relative == absolute


@pytest.mark.parametrize("key", ["nightly-2026-11-30", "a", "x" * 200, "erp:export/42"])
def test_keys_are_printable_ascii_without_spaces(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "two words", "x" * 201, "naïve", None, 42])
def test_other_keys_are_refused(key: Any) -> None:
    with pytest.raises(QocrError, match="idempotency key is 1 to 200") as caught:
        check_key(key)
    assert caught.value.code == "idempotency_key_invalid"
