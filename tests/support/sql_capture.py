"""The SQL statements a piece of work sends through an engine, for tests that check them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event


def statements_during(engine: Engine, work: Callable[[], object]) -> list[tuple[str, Any]]:
    """(statement, parameters) of every statement ``work`` executes through ``engine``."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen
