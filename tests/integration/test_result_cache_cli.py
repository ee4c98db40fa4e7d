"""The result cache and idempotent submits from the command line: `qocr run` (embedded, on
SQLite or PostgreSQL) against the emulator, then `status`, `results`, `show` and `submit`."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from qocr.cli import cli
from qocr.emulator.testing import EmulatorHandle, running_emulator
from qocr.settings import get_settings
from tests.support.images import write_pngs

KEY = "sk-cache-cli-test-0001"


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(recognizer="hash") as handle:
        yield handle


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    emulator: EmulatorHandle,
) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    monkeypatch.setenv("QOCR_DATABASE_URL", database_url)
    monkeypatch.setenv("QOCR_BASE_URL", emulator.base_url)
    monkeypatch.setenv("QOCR_BROKER_URL", redis_url)  # `submit` hands its batch over here
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def qocr(*args: str) -> Result:
    get_settings.cache_clear()
    return CliRunner().invoke(cli, list(args))


def run_json(*args: str) -> dict[str, Any]:
    result = qocr("run", *args, "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    return document


def copies(source: Path, target: Path) -> Path:
    """The same images under other names, in another folder."""
    target.mkdir()
    for path in sorted(source.iterdir()):
        shutil.copyfile(path, target / f"copy-of-{path.name}")
    return target


def test_a_rerun_under_new_names_is_read_from_the_cache(
    env: None, tmp_path: Path, emulator: EmulatorHandle
) -> None:
    write_pngs(tmp_path / "scans", 4)
    first = run_json(str(tmp_path / "scans"))
    assert emulator.stats()["requests"] == 4

    again = run_json(str(copies(tmp_path / "scans", tmp_path / "renamed")))

    assert again["counts"]["succeeded"] == 4
    assert emulator.stats()["requests"] == 4
    status = qocr("status", str(again["id"]), "--json")
    document = json.loads(status.output)
    assert (document["cached"], document["usage"]["total_tokens"]) == (4, 0)
    paid = json.loads(qocr("status", str(first["id"]), "--json").output)
    assert document["saved"]["input_tokens"] == paid["usage"]["input_tokens"]
    assert document["saved"]["output_tokens"] == paid["usage"]["output_tokens"]
    assert document["saved"]["usd"] == paid["cost"]["usd"] > 0
    human = qocr("status", str(again["id"])).output
    assert "4 item(s) from the cache" in human and f"saved ~${paid['cost']['usd']:,.6f}" in human

    lines = [json.loads(line) for line in qocr("results", str(again["id"])).output.splitlines()]
    originals = {
        row["text"]: row["item_id"]
        for row in map(json.loads, qocr("results", str(first["id"])).output.splitlines())
    }
    assert [line["cached_from"] for line in lines] == [originals[line["text"]] for line in lines]
    assert all(line["usage"]["total_tokens"] == 0 for line in lines)
    table = list(
        csv.DictReader(io.StringIO(qocr("results", str(again["id"]), "--format", "csv").output))
    )
    assert [row["cached_from"] for row in table] == [str(line["cached_from"]) for line in lines]
    shown = json.loads(qocr("show", str(lines[0]["item_id"]), "--json").output)
    assert [(a["outcome"], a["http_status"]) for a in shown["history"]] == [("cached", None)]
    shown_human = qocr("show", str(lines[0]["item_id"])).output
    assert f"cached      from item {lines[0]['cached_from']} (no call" in shown_human


def test_one_batch_holding_copies_pays_once_per_image(
    env: None, tmp_path: Path, emulator: EmulatorHandle
) -> None:
    folder = tmp_path / "copies"
    [image] = write_pngs(tmp_path / "one", 1)
    folder.mkdir()
    for index in range(6):
        shutil.copyfile(image, folder / f"copy-{index}.png")

    done = run_json(str(folder), "--concurrency", "4")

    assert done["counts"]["succeeded"] == 6
    assert emulator.stats()["requests"] == 1


def test_no_cache_and_a_changed_request_call_again(
    env: None, tmp_path: Path, emulator: EmulatorHandle
) -> None:
    write_pngs(tmp_path / "scans", 2)
    run_json(str(tmp_path / "scans"))
    run_json(str(tmp_path / "scans"), "--no-cache")
    assert emulator.stats()["requests"] == 4
    run_json(str(tmp_path / "scans"), "--max-pixels", "1000000")
    assert emulator.stats()["requests"] == 6
    run_json(str(tmp_path / "scans"), "--cache-max-age", "1h")
    assert emulator.stats()["requests"] == 6


def test_a_bad_cache_max_age_is_refused_before_anything_is_made(env: None, tmp_path: Path) -> None:
    write_pngs(tmp_path / "scans", 1)
    result = qocr("run", str(tmp_path / "scans"), "--cache-max-age", "soon")
    assert result.exit_code == 2
    assert "cache_max_age: 'soon' is not a duration like 30s, 5m, 6h or 1d" in result.output
    assert json.loads(qocr("status", "--json").output)["batches"] == []


def test_an_idempotency_key_submits_once_and_refuses_another_request(
    env: None, tmp_path: Path
) -> None:
    write_pngs(tmp_path / "scans", 3)
    folder = str(tmp_path / "scans")
    first = qocr("submit", folder, "--idempotency-key", "nightly-1", "--json")
    again = qocr("submit", folder, "--idempotency-key", "nightly-1", "--json")

    assert (first.exit_code, again.exit_code) == (0, 0), first.output + again.output
    made, found = json.loads(first.output), json.loads(again.output)
    assert (made["existing"], found["existing"]) == (False, True)
    assert (found["id"], found["items"]) == (made["id"], 3)
    human = qocr("submit", folder, "--idempotency-key", "nightly-1")
    assert human.exit_code == 0
    assert f"batch {made['id']}: 3 items, submitted before" in human.output

    refused = qocr("submit", folder, "--idempotency-key", "nightly-1", "--no-cache")
    assert refused.exit_code == 2
    assert (
        f"idempotency key 'nightly-1' was used for a different request (batch {made['id']})"
        in refused.output
    )
    assert len(json.loads(qocr("status", "--json").output)["batches"]) == 1
