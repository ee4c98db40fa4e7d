"""`qocr submit` / `qocr run` request options end to end, on SQLite and PostgreSQL: the
max_tokens ceiling at submit, sampling options stored and sent, and the CSV's columns in
the order the schema was written (issue 16, points 1, 9 and 10).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from qocr.cli import cli
from qocr.emulator.testing import EmulatorHandle, running_emulator
from qocr.models import Batch
from qocr.models.db import make_engine
from qocr.settings import get_settings
from tests.support.images import write_pngs

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KEY = "sk-request-options-0001"


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(recognizer="hash", seed=4) as handle:
        yield handle


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, emulator: EmulatorHandle
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("QOCR_DATABASE_URL", database_url)
    monkeypatch.setenv("QOCR_BASE_URL", emulator.base_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def stored_options(database_url: str, batch_id: int) -> dict[str, object]:
    engine = make_engine(database_url)
    with engine.connect() as conn:
        options = conn.scalar(select(Batch.options).where(Batch.id == batch_id))
    engine.dispose()
    assert isinstance(options, dict)
    return options


def test_submit_refuses_max_tokens_over_the_models_maximum(env: None, tmp_path: Path) -> None:
    write_pngs(tmp_path / "in", 1)
    result = CliRunner().invoke(
        cli, ["submit", str(tmp_path / "in"), "--model", "qwen-vl-ocr", "--max-tokens", "8192"]
    )
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert "max_tokens=8192 is over qwen-vl-ocr's maximum of 4096" in line


def test_run_sends_and_keeps_the_sampling_options(
    env: None, tmp_path: Path, database_url: str, emulator: EmulatorHandle
) -> None:
    write_pngs(tmp_path / "in", 2)
    args = ["--top-p", "0.5", "--top-k", "3", "--seed", "7", "--stop", "zzz", "--stop", "qqq"]
    args += ["--repetition-penalty", "1.05", "--presence-penalty", "0.5"]
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "in"), *args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["counts"]["succeeded"] == 2  # the emulator accepted every value
    options = stored_options(database_url, summary["id"])
    assert {k: options[k] for k in ("top_p", "top_k", "seed", "stop")} == {
        "top_p": 0.5,
        "top_k": 3,
        "seed": 7,
        "stop": ["zzz", "qqq"],
    }
    refused = CliRunner().invoke(cli, ["run", str(tmp_path / "in"), "--seed", str(2**31)])
    assert refused.exit_code == 2 and "seed=2147483648 is out of range" in refused.output


def test_csv_columns_follow_the_schema_as_written(env: None, database_url: str) -> None:
    # samples/invoice-schema.json is written number, seller, date, total; PostgreSQL's JSONB
    # gave date, total, number, seller.
    schema = json.loads((SAMPLES / "invoice-schema.json").read_text(encoding="utf-8"))
    assert list(schema) == ["number", "seller", "date", "total"]
    result = CliRunner().invoke(
        cli,
        ["run", str(SAMPLES / "invoice-1.png"), "--schema", str(SAMPLES / "invoice-schema.json")],
    )
    assert result.exit_code == 0, result.output
    batch_id = int(result.output.split()[1].rstrip(":"))
    exported = CliRunner().invoke(cli, ["results", str(batch_id), "--format", "csv"])
    assert exported.exit_code == 0, exported.output
    header = next(csv.reader(io.StringIO(exported.output)))
    fields = [column for column in header if column in schema]
    assert fields == ["number", "seller", "date", "total"]
    stored_schema = stored_options(database_url, batch_id)["result_schema"]
    assert isinstance(stored_schema, dict) and list(stored_schema) == list(schema)
