"""`qocr run`: the embedded mode processes a batch in-process, on SQLite or PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from qocr.cli import cli
from qocr.emulator.testing import EmulatorHandle, running_emulator
from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.db import make_engine
from qocr.settings import get_settings
from tests.support.images import expected_text, write_pngs

KEY = "sk-embedded-test-0001"


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(recognizer="hash", error_rate=0.15, seed=11) as handle:
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


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
def test_run_processes_every_item_once(
    env: None, tmp_path: Path, database_url: str, emulator: EmulatorHandle, api: str
) -> None:
    paths = write_pngs(tmp_path / "in", 12)
    result = CliRunner().invoke(
        cli, ["run", str(tmp_path / "in"), "--api", api, "--json", "--concurrency", "4"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["items"] == 12
    assert summary["counts"]["succeeded"] == 12

    engine = make_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Item.source, Result.text).join(Result, Result.item_id == Item.id)
        )
        texts = {source: text for source, text in rows}
        attempts = conn.scalar(select(func.count()).select_from(Attempt))
    engine.dispose()
    assert texts == {str(p.resolve()): expected_text(p.read_bytes()) for p in paths}
    stats = emulator.stats()
    assert sorted(stats["successes_per_image"].values()) == [1] * 12
    assert attempts == stats["requests"]


def test_run_reports_bad_sources_and_keeps_nothing(
    env: None, tmp_path: Path, database_url: str
) -> None:
    write_pngs(tmp_path / "in", 2)
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{tmp_path / 'in'}\nftp://example.invalid/x.png\n")
    result = CliRunner().invoke(cli, ["run", f"@{manifest}"])
    assert result.exit_code != 0
    assert "list.txt:2" in result.output and "unknown scheme ftp://" in result.output

    result = CliRunner().invoke(cli, ["run", str(tmp_path / "missing.png")])
    assert result.exit_code != 0
    assert "no such file" in result.output
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Item)) == 0
    engine.dispose()


def test_run_fails_items_not_the_batch(env: None, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_pngs(folder, 2)
    (folder / "blank.png").write_bytes(b"")
    result = CliRunner().invoke(cli, ["run", str(folder), "--json"])
    assert result.exit_code == 1  # something failed: say so to scripts
    counts = json.loads(result.output.strip().splitlines()[-1])["counts"]
    assert counts[ItemState.SUCCEEDED] == 2
    assert counts[ItemState.FAILED] == 1


def test_run_needs_an_api_key(env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY")
    get_settings.cache_clear()
    write_pngs(tmp_path / "in", 1)
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "in")])
    assert result.exit_code != 0
    assert "DASHSCOPE_API_KEY is not set" in result.output
