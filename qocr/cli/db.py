"""``qocr db``: create and upgrade the schema."""

from __future__ import annotations

import click
from sqlalchemy import Engine

from qocr.migrations import migrate
from qocr.models.db import make_engine
from qocr.redact import redact_url
from qocr.settings import get_settings


@click.group()
def db() -> None:
    """Manage the database schema (Alembic migrations shipped with qocr)."""


@db.command()
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(revision: str) -> None:
    """Create or upgrade the schema to REVISION."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    migrate.upgrade(engine, revision)
    _report(settings.database_url, engine)
    engine.dispose()


@db.command()
@click.argument("revision")
def downgrade(revision: str) -> None:
    """Downgrade the schema to REVISION ("base" removes every table)."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    migrate.downgrade(engine, revision)
    _report(settings.database_url, engine)
    engine.dispose()


def _report(database_url: str, engine: Engine) -> None:
    revision = migrate.current_revision(engine)
    click.echo(f"database {redact_url(database_url)} at revision {revision or 'base'}")


@db.command()
def current() -> None:
    """Print the schema's revision."""
    settings = get_settings()
    engine = make_engine(settings.database_url)
    click.echo(migrate.current_revision(engine) or "none")
    engine.dispose()
