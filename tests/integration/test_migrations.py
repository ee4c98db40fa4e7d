"""The same Alembic migrations build the same schema on SQLite and PostgreSQL, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Connection, func, inspect, select, text

from qocr.cli import cli
from qocr.migrations import migrate
from qocr.models import Base
from qocr.models.db import make_engine
from qocr.models.entities import Item, source_digest


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("fresh_pg_database")
    return url


def test_upgrade_downgrade_round_trip(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    assert {"batches", "items", "results", "attempts"} <= set(inspect(engine).get_table_names())

    migrate.downgrade(engine, "base")
    assert migrate.current_revision(engine) is None
    assert not migrate.has_schema(engine)

    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    engine.dispose()


def test_migrations_match_the_models(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_cli_db_upgrade(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from qocr.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QOCR_DATABASE_URL", empty_database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    engine = make_engine(empty_database_url)
    assert migrate.is_current(engine)
    assert f"at revision {migrate.current_revision(engine)}" in result.output
    engine.dispose()


# Rows of every table as revision 0003 made them, in its own columns.
ROWS_AT_0003 = [
    """INSERT INTO batches (id, name, api, model, options, source_options, state, total_items,
                            schedule_name, scheduled_for, created_at, updated_at)
       VALUES (1, 'nightly', 'compatible', 'qwen-vl-ocr-latest', '{}', '{}', 'running', 2,
               'nightly', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)""",
    """INSERT INTO items (id, batch_id, source, state, attempts, created_at, updated_at)
       VALUES (1, 1, 's3://b/a.png', 'succeeded', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP),
              (2, 1, 's3://b/é.png', 'queued', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)""",
    """INSERT INTO results (item_id, text, input_tokens, output_tokens, image_tokens,
                            total_tokens, created_at)
       VALUES (1, 'hello', 1, 2, 0, 3, CURRENT_TIMESTAMP)""",
    """INSERT INTO attempts (item_id, number, outcome, started_at, ended_at, error_code)
       VALUES (1, 1, 'succeeded', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, NULL)""",
    """INSERT INTO batch_tallies (batch_id, kind, key, shard, value)
       VALUES (1, 'state', 'succeeded', 0, 1)""",
    """INSERT INTO schedule_runs (schedule_name, scheduled_for, triggered_by, outcome, attempts,
                                  started_at, batch_id, new_items, export_attempts)
       VALUES ('nightly', CURRENT_TIMESTAMP, 'beat', 'batch_created', 1, CURRENT_TIMESTAMP, 1,
               2, 0)""",
]
TABLES = ("batches", "items", "results", "attempts", "batch_tallies", "schedule_runs")


def _row_counts(conn: Connection) -> dict[str, int]:
    return {
        table: int(conn.scalar(select(func.count()).select_from(text(table))) or 0)
        for table in TABLES
    }


def test_0004_keeps_every_row_and_fills_the_source_digest(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine, "0003")
    with engine.begin() as conn:
        for statement in ROWS_AT_0003:
            conn.execute(text(statement))
        before = _row_counts(conn)
    assert set(before.values()) <= {1, 2}

    # On SQLite, 0004 rebuilds batches and items: with foreign keys on, dropping the old
    # tables would cascade into results, attempts and schedule runs.
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert _row_counts(conn) == before
        digests = dict(conn.execute(select(Item.source, Item.source_sha256)).all())
    assert digests == {source: source_digest(source) for source in digests}

    migrate.downgrade(engine, "0003")
    with engine.connect() as conn:
        assert _row_counts(conn) == before
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    engine.dispose()


# A scheduled batch (one item made at submit, one page of it) and a batch of a plain submit.
ROWS_AT_0010 = [
    """INSERT INTO batches (id, name, api, model, options, source_options, state, total_items,
                            schedule_name, scheduled_for, created_at, updated_at)
       VALUES (1, 'nightly', 'compatible', 'm', '{}', '{}', 'running', 2, 'nightly',
               CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP),
              (2, 'adhoc', 'compatible', 'm', '{}', '{}', 'running', 1, NULL, NULL,
               CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)""",
    """INSERT INTO items (id, batch_id, source, source_sha256, state, attempts, created_at,
                          updated_at, parent_item_id, page)
       VALUES (1, 1, 's3://b/a.pdf', 'digest-a', 'expanded', 1, CURRENT_TIMESTAMP,
               CURRENT_TIMESTAMP, NULL, NULL),
              (2, 1, 's3://b/a.pdf#page=1', 'digest-page', 'queued', 0, CURRENT_TIMESTAMP,
               CURRENT_TIMESTAMP, 1, 1),
              (3, 2, 's3://b/a.pdf', 'digest-a', 'queued', 0, CURRENT_TIMESTAMP,
               CURRENT_TIMESTAMP, NULL, NULL)""",
]


def test_0011_records_scheduled_items_and_gives_defaults_for_copy(
    empty_database_url: str,
) -> None:
    engine = make_engine(empty_database_url)
    migrate.upgrade(engine, "0010")
    with engine.begin() as conn:
        for statement in ROWS_AT_0010:
            conn.execute(text(statement))
    migrate.upgrade(engine)
    with engine.begin() as conn:
        recorded = conn.execute(text("SELECT * FROM schedule_sources")).all()
        assert [tuple(row) for row in recorded] == [("nightly", "digest-a", 1)]
        # What COPY leaves out comes from the server's defaults.
        conn.execute(
            text("INSERT INTO items (id, batch_id, source, source_sha256) VALUES (4, 2, 's', 'd')")
        )
        state, attempts, created = conn.execute(
            text("SELECT state, attempts, created_at FROM items WHERE source = 's'")
        ).one()
        assert (state, attempts) == ("queued", 0) and created is not None
        conn.execute(text("DELETE FROM items WHERE source = 's'"))

    migrate.downgrade(engine, "0010")
    assert "schedule_sources" not in inspect(engine).get_table_names()
    assert [c["name"] for c in inspect(engine).get_unique_constraints("items")] == [
        "uq_items_batch_id_source_sha256"
    ]
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    engine.dispose()
