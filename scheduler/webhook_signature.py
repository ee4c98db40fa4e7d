"""How a completion webhook is signed and checked: HMAC-SHA256 over ``timestamp.body``.

    X-Qocr-Signature: t=1764547200,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8...

``v1`` is the hex HMAC-SHA256, keyed with ``QOCR_WEBHOOK_SECRET``, of the decimal Unix
timestamp ``t``, a ``.``, and the raw request body. The timestamp is signed with the body,
so a receiver that refuses a ``t`` older than a few minutes refuses a replayed request
too. No I/O here: the sender and any receiver (``verify``) share these functions.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from qocr.errors import QocrError

SIGNATURE_HEADER = "X-Qocr-Signature"
# The same on every attempt of one delivery: a receiver dedupes on it.
DELIVERY_HEADER = "X-Qocr-Delivery"
EVENT_HEADER = "X-Qocr-Event"  # batch.completed, batch.stopped or batch.cancelled
ATTEMPT_HEADER = "X-Qocr-Attempt"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(QocrError):
    """A webhook request whose signature is missing, malformed, wrong or too old."""

    code = "signature_invalid"


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Qocr-Signature`` value of ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, body, timestamp)}"


def _mac(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a received request; returns its timestamp, or raises :class:`SignatureError`.

    Several ``v1=`` values are accepted (one per secret while a secret is being rotated).
    """
    if not header:
        raise SignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise SignatureError(f"timestamp {timestamp} is outside the tolerance (replay?)")
    expected = _mac(secret, body, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("signature does not match the body")
    return timestamp


def event_name(batch_state: str) -> str:
    """The ``X-Qocr-Event`` of a batch that ended in ``batch_state``."""
    return f"batch.{batch_state}"
