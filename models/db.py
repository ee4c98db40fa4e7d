"""Engines and sessions, made in one place and passed in; what every query class stands on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean the psycopg 3 driver qocr ships with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# A pooled connection used less than this long ago is taken without a ping: a worker takes
# one several times per item, and a ping is a round trip and a commit on the server
# (bench/overhead.py). A connection broken within that second fails its statement instead,
# which every caller already handles as it handles a database that fails mid-transaction.
PING_AFTER_IDLE_SECONDS = 1.0

PG_CONNECT_ARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # milliseconds
}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for qocr's access pattern: many short transactions from many threads.

    Statement parameters never appear in its errors: they hold sources (presigned URLs),
    provider messages and results, and a traceback ends up in logs and terminals.
    """
    url = normalize_url(url)
    kwargs["hide_parameters"] = True
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # A database host that vanished (a network partition, a dead machine) must fail a
    # query, not hang the worker thread waiting on it forever with its item leased:
    # TCP keepalives and a user timeout end such a connection within about half a minute.
    connect_args = {**PG_CONNECT_ARGS, **kwargs.pop("connect_args", {})}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use when it sat idle: a PostgreSQL restart drops
    every pooled connection, and a failed ping replaces the whole pool (SQLAlchemy's
    pre-ping, for idle connections only: :data:`PING_AFTER_IDLE_SECONDS`)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in_at"] = monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in_at = record.info.get("checked_in_at")
        if checked_in_at is None or monotonic() - checked_in_at < PING_AFTER_IDLE_SECONDS:
            return  # new (it just connected), or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # The pool retries the checkout on a new connection, older ones are discarded.
            raise exc.InvalidatePoolError(str(error)) from error


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status) run beside the writer; busy_timeout queues writers
    # instead of failing them.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class EngineBound:
    """The engine a query class runs on, its sessions and its dialect's name."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.dialect = engine.dialect.name

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session whose queries all see one snapshot (the counts add up)."""
        with self.sessions() as session:
            if self.dialect == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session


def rows_changed(result: Any) -> int:
    """Rows an UPDATE changed (drivers answer -1 when they cannot tell)."""
    return max(int(result.rowcount), 0)
