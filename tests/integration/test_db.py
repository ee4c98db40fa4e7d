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
    # A second item with the first one's id: the primary key refuses it (its message names
    # the key only; a CHECK's would quote the whole row).
    insert = text(
        "INSERT INTO items (id, batch_id, source, source_sha256, state, attempts,"
        " created_at, updated_at) VALUES (1, :batch, :source, :digest, 'queued', 0,"
        " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"batch": 424242, "source": "/a.png", "digest": "a" * 64})
    with pytest.raises(IntegrityError) as caught, engine.begin() as conn:
        conn.execute(insert, {"batch": 424242, "source": PRESIGNED, "digest": "d" * 64})
    engine.dispose()
    printed = "".join(traceback.format_exception(caught.value))
    assert "INSERT INTO items" in printed
    assert "SQL parameters hidden" in printed
    assert "5ecret" not in printed
