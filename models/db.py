"""Engines and sessions, made in one place and passed in; what every query class stands on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` mean the psycopg 3 driver qocr ships with."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


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
    # A PostgreSQL restart drops every pooled connection; check them before use.
    kwargs.setdefault("pool_pre_ping", True)
    # A database host that vanished (a network partition, a dead machine) must fail a
    # query, not hang the worker thread waiting on it forever with its item leased:
    # TCP keepalives and a user timeout end such a connection within about half a minute.
    connect_args = {**PG_CONNECT_ARGS, **kwargs.pop("connect_args", {})}
    return create_engine(url, connect_args=connect_args, **kwargs)


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
