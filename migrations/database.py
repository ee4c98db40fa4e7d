"""Open the configured database the one way every command does: reachable, with qocr's schema.

SQLite (the embedded default) gets its schema created or upgraded on the spot; PostgreSQL is
only checked, since its schema is upgraded on purpose (``qocr db upgrade``). Failures become
a :class:`ConfigError` of one line, never a driver traceback with a password in it.

Alembic is imported only when the schema really has to change: reading ``alembic_version``
with plain SQL, and the newest revision from the migration files' header lines, keeps a
``qocr status`` call ~0.1 s faster.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.exc import ArgumentError, DBAPIError

from qocr.errors import ConfigError
from qocr.models.db import make_engine
from qocr.redact import redact_text, redact_url
from qocr.settings import Settings

VERSIONS_DIR = Path(__file__).parent / "versions"
# The header lines script.py.mako writes: revision: str = "0004" / down_revision: ... = "0003"
_REVISION = re.compile(r"""^(down_revision|revision)\b[^=\n]*=\s*["']([^"'\n]+)["']""", re.M)
# A blackholed host would otherwise hold a command for the kernel's TCP timeout (minutes).
PG_CONNECT_TIMEOUT_SECONDS = 10
NO_SCHEMA = "the database has no qocr schema: run `qocr db upgrade` first"


class DatabaseUnavailable(ConfigError):
    """The database cannot be reached or opened (down, wrong host, no such database)."""

    code = "database_unavailable"


def open_database(settings: Settings, *, prepare_schema: bool = True) -> Engine:
    """An engine on ``settings.database_url``, checked to answer; the caller disposes it.

    With ``prepare_schema`` (every command but ``qocr db``): a SQLite file is brought to the
    newest schema; a PostgreSQL database without qocr's tables is a :class:`ConfigError`
    that says to run ``qocr db upgrade``.
    """
    url = settings.database_url
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            schema = _schema(conn) if prepare_schema else "ready"
    except DBAPIError as exc:
        engine.dispose()
        raise unavailable(exc, url) from None
    if schema == "stale":
        from qocr.migrations import migrate

        migrate.upgrade(engine)
    elif schema == "missing":
        engine.dispose()
        raise ConfigError(NO_SCHEMA)
    return engine


def _schema(conn: Connection) -> Literal["ready", "stale", "missing"]:
    """SQLite: "stale" unless at the head (the embedded default: nothing to set up by hand).

    PostgreSQL: "missing" without qocr's tables; its revision is the operator's business.
    """
    inspector = inspect(conn)
    if conn.dialect.name != "sqlite":
        return "ready" if inspector.has_table("items") else "missing"
    if not inspector.has_table("alembic_version"):
        return "stale"
    revisions = set(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    head = head_revision()
    return "ready" if head is not None and revisions == {head} else "stale"


@cache
def head_revision() -> str | None:
    """The newest revision in migrations/versions, read from the files' header lines.

    None when that is not one revision (a branch, a merge): Alembic then decides. A wrong
    answer here could only send a SQLite file through Alembic for nothing, never skip it.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in VERSIONS_DIR.glob("*.py"):
        for kind, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def unavailable(exc: DBAPIError, database_url: str) -> DatabaseUnavailable:
    return DatabaseUnavailable("cannot open the database " + describe_failure(exc, database_url))


def describe_failure(exc: DBAPIError, database_url: str) -> str:
    """``URL: reason``, the driver's own first line, the password kept out of both.

    Not ``str(exc)``: SQLAlchemy's text adds the statement and its parameters.
    """
    lines = str(exc.orig).strip().splitlines()
    reason = lines[0] if lines else type(exc.orig).__name__
    return f"{redact_url(database_url)}: {redact_text(reason, _password(database_url))}"


def _engine(url: str) -> Engine:
    kwargs = {}
    if url.startswith("postgres") and "connect_timeout" not in url:
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS}
    try:
        return make_engine(url, **kwargs)
    except (ArgumentError, ValueError):
        # SQLAlchemy's message quotes the whole URL, password included.
        raise ConfigError(
            f"QOCR_DATABASE_URL is not a database URL qocr can open: {redact_url(url)}"
        ) from None


def _password(database_url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(database_url).password
    except ArgumentError:
        return None
