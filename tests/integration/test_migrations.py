"""The same Alembic migrations build the same schema on SQLite and PostgreSQL, both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import inspect

from qocr.cli import cli
from qocr.migrations import migrate
from qocr.models import Base
from qocr.models.db import make_engine


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
        context = MigrationContext.configure(conn, opts={"compare_type": False})
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
