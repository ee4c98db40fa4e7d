"""Redaction: presigned URL signatures and credentials, and passwords in URLs, never shown."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest

from qocr.logs import RedactSecrets
from qocr.redact import redact_text, redact_url

SIGNATURE = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2F%2F%2F%2F%2F%2FwEaCXVzLWVhc3QtMSJHMEUC"
SIGV4_URL = (
    "https://invoices.s3.amazonaws.com/2026/11/scan-001.png"
    "?response-content-type=image%2Fpng"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential={ACCESS_KEY}%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261125T010000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    f"&X-Amz-Security-Token={SESSION_TOKEN}"
    f"&X-Amz-Signature={SIGNATURE}"
)
SIGV2_SIGNATURE = "vjbyPxybdZaNmGa%2ByT272YEAiv4%3D"
SIGV2_URL = (
    "http://minio:9000/scans/a.jpg"
    f"?AWSAccessKeyId={ACCESS_KEY}&Expires=1764032400&Signature={SIGV2_SIGNATURE}"
)
SECRETS = (SIGNATURE, ACCESS_KEY, "IQoJb3JpZ2luX2VjEJr", "vjbyPxybdZaNmGa")


def _shows_no_secret(text: str) -> bool:
    return not any(secret in text for secret in SECRETS)


@pytest.mark.parametrize("url", [SIGV4_URL, SIGV2_URL])
def test_a_presigned_url_in_a_provider_message_loses_its_credentials(url: str) -> None:
    message = f"Download the media resource timed out during the data inspection: {url}."
    cleaned = redact_text(message)
    assert _shows_no_secret(cleaned)
    # What helps a person find the object stays readable.
    assert url.split("?", 1)[0] in cleaned
    assert cleaned.startswith("Download the media resource timed out")


def test_the_url_survives_json_and_html_escaping_and_percent_encoding() -> None:
    shapes = [
        json.dumps({"message": f"bad url {SIGV4_URL}"}),  # JSON text as the body came
        SIGV4_URL.replace("&", "&amp;"),  # an HTML error page
        SIGV4_URL.replace("&", "\\u0026"),  # JSON-escaped ampersands
        "url=" + quote(SIGV4_URL, safe=""),  # echoed as a query value itself
        f"'{SIGV2_URL}'",
        f'<img src="{SIGV2_URL}">',
    ]
    for shape in shapes:
        cleaned = redact_text(shape)
        assert _shows_no_secret(cleaned), cleaned


@pytest.mark.parametrize(
    "parameter",
    ["token", "access_token", "api_key", "apikey", "password", "client_secret", "sig", "auth"],
)
def test_any_query_parameter_named_like_a_secret_is_masked(parameter: str) -> None:
    cleaned = redact_text(f"GET https://cdn.example.com/x.png?w=200&{parameter}=hunter2-42&h=9")
    assert "hunter2-42" not in cleaned
    assert f"{parameter}=***" in cleaned
    assert "w=200" in cleaned and "h=9" in cleaned


def test_a_password_in_a_url_inside_text_is_masked() -> None:
    cleaned = redact_text("cannot reach redis://:s3cr3t-pw@cache:6379/0 (refused)")
    assert "s3cr3t-pw" not in cleaned
    assert "redis://:***@cache:6379/0" in cleaned


def test_ordinary_text_is_left_alone() -> None:
    text = "InvalidParameter: image width 5 px is below 10 px; see https://example.com/doc?id=7"
    assert redact_text(text) == text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg://qocr@db:5432/qocr?password=hunter2&sslmode=require",
            "postgresql+psycopg://qocr@db:5432/qocr?password=***&sslmode=require",
        ),
        (
            "postgresql://qocr:hunter2@db/qocr?application_name=x",
            "postgresql://qocr:***@db/qocr?application_name=x",
        ),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("sqlite:///qocr.db", "sqlite:///qocr.db"),
    ],
)
def test_redact_url_masks_passwords_in_the_userinfo_and_the_query(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_log_records_lose_presigned_signatures(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("qocr.test.redact")
    caplog.handler.addFilter(RedactSecrets())
    with caplog.at_level(logging.INFO):
        logger.warning("item 3 failed: %s", f"cannot download {SIGV4_URL}")
        try:
            raise RuntimeError(f"provider said: bad image {SIGV2_URL}")
        except RuntimeError:
            logger.exception("unexpected")
    assert "X-Amz-Signature=***" in caplog.text
    assert _shows_no_secret(caplog.text)
