"""Write one batch's results to S3 as JSON Lines, streamed from the database.

The lines are exactly those of ``qocr results BATCH`` (``Reports.iter_items`` pages through
the batch by item id; ``item_json`` shapes each line, error messages redacted). They are
spooled to a temporary file (memory up to 8 MB, then disk) and uploaded with boto3's
managed transfer (multipart when large), so a batch of any size needs no big buffer and a
failed export leaves no object behind.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from qocr.models.documents import item_json
from qocr.models.reports import Reports
from qocr.s3 import parse_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

SPOOL_BYTES = 8 * 1024 * 1024
CONTENT_TYPE = "application/x-ndjson"


def batch_records(engine: Engine, batch_id: int, secret: str | None) -> Iterable[dict[str, Any]]:
    """Every item of the batch as its ``qocr results`` JSONL object, in item order."""
    for row in Reports(engine).iter_items(batch_id):
        yield item_json(row, secret)


def upload_jsonl(s3: S3Client, uri: str, records: Iterable[dict[str, Any]]) -> int:
    """Upload ``records`` to ``uri`` (``s3://bucket/key``) as JSONL; returns how many lines."""
    location = parse_s3_uri(uri)
    count = 0
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as buffer:
        for record in records:
            buffer.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
            count += 1
        buffer.seek(0)
        s3.upload_fileobj(
            buffer, location.bucket, location.key, ExtraArgs={"ContentType": CONTENT_TYPE}
        )
    return count
