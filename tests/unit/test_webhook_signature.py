"""The webhook signature: HMAC-SHA256 over `timestamp.body`, checked with a replay window."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from qocr.scheduler.webhook_signature import SignatureError, event_name, signature, verify

SECRET = "whsec-unit-0001"
BODY = b'{"id":12,"state":"completed"}'
NOW = 1_764_547_200


def test_the_signature_is_the_hmac_of_the_timestamp_a_dot_and_the_body() -> None:
    expected = hmac.new(SECRET.encode(), b"1764547200." + BODY, hashlib.sha256).hexdigest()

    assert signature(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"
    assert verify(SECRET, signature(SECRET, BODY, NOW), BODY, now=NOW + 10) == NOW


@pytest.mark.parametrize(
    ("header", "body", "now", "reason"),
    [
        (None, BODY, NOW, "no X-Qocr-Signature"),
        ("v1=abc", BODY, NOW, "malformed"),
        (f"t={NOW}", BODY, NOW, "malformed"),
        (signature(SECRET, BODY, NOW), BODY + b" ", NOW, "does not match"),
        (signature("another-secret", BODY, NOW), BODY, NOW, "does not match"),
        (signature(SECRET, BODY, NOW), BODY, NOW + 301, "outside the tolerance"),
        (signature(SECRET, BODY, NOW), BODY, NOW - 301, "outside the tolerance"),
    ],
)
def test_a_bad_or_old_signature_is_refused(
    header: str | None, body: bytes, now: int, reason: str
) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(SECRET, header, body, now=now)


def test_any_of_several_signatures_may_match_while_a_secret_is_rotated() -> None:
    old = signature("old-secret", BODY, NOW).split(",")[1]
    header = f"{signature(SECRET, BODY, NOW)},{old}"

    assert verify(SECRET, header, BODY, now=NOW) == NOW
    assert verify("old-secret", header, BODY, now=NOW) == NOW


def test_the_event_names_the_state_the_batch_ended_in() -> None:
    assert [event_name(s) for s in ("completed", "stopped", "cancelled")] == [
        "batch.completed",
        "batch.stopped",
        "batch.cancelled",
    ]
