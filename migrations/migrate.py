"""Apply the Alembic migrations that ship inside the package."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect

from qocr.errors import QocrError

MIGRATIONS_DIR = Path(__file__).parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation; URLs may hold escaped characters.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    _run(engine, lambda config: command.upgrade(config, revision))


def downgrade(engine: Engine, revision: str) -> None:
    _run(engine, lambda config: command.downgrade(config, revision))


def _run(engine: Engine, step: Callable[[Config], None]) -> None:
    with (
        engine.connect() as connection,
        _sqlite_foreign_keys_off(connection),
        connection.begin(),
    ):
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        step(config)
        _check_foreign_keys(connection)


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite alters a table by rebuilding it: copy, DROP the old one, rename the copy. With
    foreign keys on, that DROP deletes the rows of every table referencing it (ON DELETE
    CASCADE): a migration of ``items`` would empty ``results`` and ``attempts``.

    The pragma is ignored inside a transaction, so it is set before the migration's opens.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        yield
    finally:
        connection.rollback()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def _check_foreign_keys(connection: Connection) -> None:
    """Refuse to commit a SQLite migration that left a row pointing nowhere."""
    if connection.dialect.name != "sqlite":
        return
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if violations:
        raise QocrError(
            f"the migration left rows with dangling foreign keys: {violations[:5]}",
            code="migration_failed",
        )


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_current(engine: Engine) -> bool:
    """True when the schema is at the newest revision."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    return current_revision(engine) == head


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("items")
