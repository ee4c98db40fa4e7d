"""Batches made by `qocr run` in-process (click's CliRunner) against the emulator, on SQLite
or PostgreSQL, for the tests of reports and of the status, results and show commands."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, select, text

from qocr.cli import cli
from qocr.emulator.testing import running_emulator
from qocr.migrations import migrate
from qocr.models import Item
from qocr.models import Result as ResultRow
from qocr.models.db import make_engine
from qocr.models.reports import Reports
from qocr.settings import get_settings
from tests.support.images import write_pngs

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
API_KEY = "sk-reports-test-0123456789"
PG_ADMIN_URL = os.environ.get(
    "QOCR_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
# Depth 3, with a list of objects: the deepest a DashScope result_schema may go.
SCHEMA: dict[str, Any] = {
    "invoice_number": "",
    "date": "",
    "seller": {"name": "", "address": {"city": ""}},
    "total": "",
    "line_items": [{"description": "", "amount": ""}],
}


@dataclass(frozen=True)
class Built:
    """The batches of one database, and where their inputs are."""

    url: str
    tmp: Path
    kie: int  # 3 sample invoices, nested schema, DashScope API
    mixed: int  # 3 PNGs + a 0-byte .png + a text file named .png, flaky provider
    cut: int  # 1 invoice with max_tokens 5: finish_reason "length"
    empty_png: Path


def invoke(*args: str) -> Result:
    """``qocr ARGS`` in-process, with the settings read afresh from the environment."""
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()


def run_batch(*args: str) -> int:
    """`qocr run ARGS --json`; returns the new batch's id (exit 1 just means failed items)."""
    result = invoke("run", *args, "--json")
    assert result.exit_code in (0, 1), result.output
    return int(json.loads(result.output.strip().splitlines()[-1])["id"])


@contextmanager
def scratch_pg_database() -> Iterator[str]:
    """A migrated PostgreSQL database of our own for one test module."""
    name = f"qocr_reports_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def pipeline_batches(backend: str, tmp: Path) -> Iterator[Built]:
    """Build the three batches with `qocr run` on ``backend``; the env stays set meanwhile."""
    with ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp / 'qocr.db'}"
        else:
            url = stack.enter_context(scratch_pg_database())
        clean = stack.enter_context(running_emulator(recognizer="hash"))
        # Seeded, and called one request at a time: the same items are retried every run.
        flaky = stack.enter_context(running_emulator(recognizer="hash", error_rate=0.4, seed=5))
        env = stack.enter_context(pytest.MonkeyPatch.context())
        for name in [k for k in os.environ if k.startswith("QOCR_")]:
            env.delenv(name)
        env.chdir(tmp)
        env.setenv("DASHSCOPE_API_KEY", API_KEY)
        env.setenv("QOCR_DATABASE_URL", url)
        env.setenv("QOCR_BASE_URL", clean.base_url)

        schema_file = tmp / "schema.json"
        schema_file.write_text(json.dumps(SCHEMA))
        # The three invoice images (samples/ also holds a two-page PDF).
        invoices = [str(SAMPLES / f"invoice-{n}.png") for n in (1, 2, 3)]
        kie = run_batch(
            *invoices, "--api", "dashscope", "--schema", str(schema_file), "--name", "kie"
        )
        folder = tmp / "mixed"
        write_pngs(folder, 3)
        empty_png = folder / "empty.png"
        empty_png.write_bytes(b"")
        (folder / "notes.png").write_text("this is not an image\n")
        env.setenv("QOCR_BASE_URL", flaky.base_url)
        mixed = run_batch(str(folder), "--name", "mixed", "--concurrency", "1")
        env.setenv("QOCR_BASE_URL", clean.base_url)
        cut = run_batch(str(SAMPLES / "invoice-1.png"), "--max-tokens", "5", "--name", "cut")
        yield Built(url=url, tmp=tmp, kie=kie, mixed=mixed, cut=cut, empty_png=empty_png)


def item_rows(reports: Reports, batch_id: int) -> list[tuple[Item, ResultRow | None]]:
    """The batch's items with their results, straight from the tables."""
    with reports.sessions() as session:
        rows = session.execute(
            select(Item, ResultRow)
            .outerjoin(ResultRow, ResultRow.item_id == Item.id)
            .where(Item.batch_id == batch_id)
            .order_by(Item.id)
        )
        return [(item, result) for item, result in rows]
