"""Engines made by ``models.db`` on SQLite and PostgreSQL."""

from __future__ import annotations

import traceback

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from qocr.models.db import make_engine

PRESIGNED = "https://b.s3.amazonaws.com/k.png?X-Amz-Signature=5ecret5ecret5ecret"


def test_a_failed_statement_does_not_print_its_parameters(database_url: str) -> None:
    engine = make_engine(database_url)
    # An item of a batch that does not exist: the foreign key refuses it.
    insert = text(
        "INSERT INTO items (batch_id, source, source_sha256, state, attempts,"
        " created_at, updated_at) VALUES (:batch, :source, :digest, 'queued', 0,"
        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(insert, {"batch": 424242, "source": PRESIGNED, "digest": "d" * 64})
    engine.dispose()
    printed = "".join(traceback.format_exception(caught.value))
    assert "INSERT INTO items" in printed
    assert "SQL parameters hidden" in printed
    assert "5ecret" not in printed
