"""Idempotent submits: the same key and request give one batch, however often or racily sent.

A submit with a key first looks for the batch that holds it. Found: the same request
(same sha256 of its normalized sources and options) gets that batch back and nothing is
created; another request is refused with :class:`IdempotencyConflict`. Not found: the
batch is created with the key on its row, under ``UNIQUE(batches.idempotency_key)``. Two
submits racing with one key both reach the insert; the database lets one commit and fails
the other on the constraint (on PostgreSQL the loser waits on the winner's row, before any
item is inserted), and the loser then finds and returns the winner's batch.

Scheduled runs need no key: their batches are UNIQUE per (schedule, slot) the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.exc import IntegrityError

from qocr.errors import QocrError
from qocr.models.store import Store
from qocr.models.submissions import KeyedBatch, Submissions
from qocr.scheduler.submit import BatchRequest, create_batch
from qocr.settings import Settings

KEY_MAX_CHARS = 200
# Printable ASCII without spaces: safe in a header, a URL, a log line and a shell.
_KEY = re.compile(r"[\x21-\x7e]+")
_DIGEST_VERSION = 1


class IdempotencyConflict(QocrError):
    """The idempotency key was used before for a different request."""

    code = "idempotency_conflict"


@dataclass(frozen=True)
class Submitted:
    """What a submit made or found: ``existing`` when the key already had this batch."""

    batch_id: int
    items: int
    existing: bool


def check_key(key: Any) -> str:
    """The key, or a :class:`QocrError` saying what a key may be."""
    if not isinstance(key, str) or not _KEY.fullmatch(key) or len(key) > KEY_MAX_CHARS:
        raise QocrError(
            f"an idempotency key is 1 to {KEY_MAX_CHARS} printable ASCII characters without spaces",
            code="idempotency_key_invalid",
        )
    return key


def request_sha256(request: BatchRequest) -> str:
    """sha256 of the request as normalized: sources (local paths made absolute) and every
    option, defaults from the settings included; the schema keeps its key order."""
    options = {k: v for k, v in request.options.to_dict().items() if k != "granted_max_tokens"}
    canonical = {
        "v": _DIGEST_VERSION,
        "sources": [_normal_source(source) for source in request.sources],
        "options": options,
        "api": request.api,
        "name": request.name,
        "s3_mode": request.s3_mode,
        "notify_url": request.notify_url,
        "cache": request.cache_policy().source_options(),
        "documents": request.documents.source_options(),
    }
    if request.mode != "realtime":  # realtime digests stay what they were
        canonical["mode"] = request.mode
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _normal_source(source: str) -> str:
    source = source.strip()
    if source.startswith("@"):
        return "@" + os.path.abspath(source[1:])
    if "://" in source:
        return source
    return os.path.abspath(source)


def submit_once(
    store: Store, request: BatchRequest, settings: Settings, key: str | None = None
) -> Submitted:
    """Create the batch of ``request``; with ``key``, at most once for that key."""
    if key is None:
        batch_id, items = create_batch(store, request, settings)
        return Submitted(batch_id, items, existing=False)
    key = check_key(key)
    digest = request_sha256(request)
    submissions = Submissions(store.engine)
    found = submissions.batch_for_key(key)
    if found is not None:
        return _existing(found, key, digest)
    keyed = replace(request, idempotency_key=key, request_sha256=digest)
    try:
        batch_id, items = create_batch(store, keyed, settings)
    except IntegrityError:
        # Another submit with this key committed first (UNIQUE(idempotency_key)).
        found = submissions.batch_for_key(key)
        if found is None:
            raise
        return _existing(found, key, digest)
    return Submitted(batch_id, items, existing=False)


def _existing(found: KeyedBatch, key: str, digest: str) -> Submitted:
    if found.request_sha256 != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was used for a different request "
            f"(batch {found.batch_id}); use a new key for a new request"
        )
    return Submitted(found.batch_id, found.total, existing=True)
