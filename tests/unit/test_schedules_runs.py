"""What a failed run stores (never a secret), and the one entry beat sends."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from qocr.errors import QocrError
from qocr.scheduler.locks import lock_key
from qocr.scheduler.runs import _describe_failure
from qocr.scheduler.sources import SourceError
from qocr.worker.beat import BEAT_ENTRY, TICK_EXPIRES_SECONDS, beat_schedule
from qocr.worker.queues import TICK_TASK


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            SourceError("no such S3 bucket: scans", code="source_bucket_not_found", where="#1"),
            "source_bucket_not_found",
            "#1: no such S3 bucket: scans",
        ),
        (
            QocrError("bad key sk-abcdef0123456789 in a URL", code="x"),
            "x",
            "bad key sk-*** in a URL",
        ),
        (
            ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "token=abc123 is not allowed"}},
                "ListObjectsV2",
            ),
            "s3_error",
            "S3 said AccessDenied",
        ),
        (
            RuntimeError("connection to postgresql://qocr:hunter2@db failed"),
            "schedule_run_error",
            "unexpected RuntimeError (see the worker's log)",
        ),
    ],
)
def test_a_failure_is_stored_without_secrets(error: Exception, code: str, message: str) -> None:
    assert _describe_failure(error) == (code, message)


def test_beat_sends_only_the_tick() -> None:
    assert beat_schedule(30) == {
        BEAT_ENTRY: {
            "task": TICK_TASK,
            "schedule": 30.0,
            "options": {"expires": TICK_EXPIRES_SECONDS},
        }
    }
    # A tick period longer than the expiry still lets each tick live two periods.
    assert beat_schedule(900)[BEAT_ENTRY]["options"]["expires"] == 1800


def test_lock_keys_are_stable_and_distinct() -> None:
    assert lock_key("nightly") == lock_key("nightly")
    assert lock_key("nightly") != lock_key("weekly")
    assert -(2**63) <= lock_key("nightly") < 2**63
