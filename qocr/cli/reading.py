"""What the read commands share: the reports over the configured database, and JSON output.

``qocr status``, ``results``, ``show``, ``retry`` and ``cancel`` open the database through
:func:`open_database` (one clear line for a database that is down or has no schema) and need
neither Celery nor boto3 nor aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from qocr.migrations.database import open_database
from qocr.models.reports import Reports
from qocr.settings import Settings


@contextmanager
def open_reports(settings: Settings) -> Iterator[Reports]:
    """The reporting queries over the configured database; the engine is closed after."""
    engine = open_database(settings)
    try:
        yield Reports(engine)
    finally:
        engine.dispose()


def no_such(kind: str, ident: int) -> click.ClickException:
    return click.ClickException(f"no {kind} with id {ident}")


def dump(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False)


def api_secret(settings: Settings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key else None
