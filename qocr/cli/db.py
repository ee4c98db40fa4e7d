"""``qocr db``: create and upgrade the schema."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click
from sqlalchemy import Engine

from qocr.migrations import migrate
from qocr.migrations.database import open_database
from qocr.redact import redact_url
from qocr.settings import get_settings


@click.group()
def db() -> None:
    """Manage the database schema (Alembic migrations shipped with qocr)."""


@contextmanager
def _database() -> Iterator[Engine]:
    """The configured database, reachable (or one clear line), whatever its schema."""
    engine = open_database(get_settings(), prepare_schema=False)
    try:
        yield engine
    finally:
        engine.dispose()


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(revision: str) -> None:
    """Create or upgrade the schema to REVISION."""
    with _database() as engine:
        migrate.upgrade(engine, revision)
        _report(engine)


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION ("base" removes every table)."""
    with _database() as engine:
        migrate.downgrade(engine, revision)
        _report(engine)


def _report(engine: Engine) -> None:
    revision = migrate.current_revision(engine)
    url = redact_url(get_settings().database_url)
    click.echo(f"database {url} at revision {revision or 'base'}")


@db.command()
def current() -> None:
    """Print the schema's revision."""
    with _database() as engine:
        click.echo(migrate.current_revision(engine) or "none")
