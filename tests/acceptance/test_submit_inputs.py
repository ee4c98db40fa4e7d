"""Bad input to real `python -m qocr submit` processes fails cleanly (issue 13, point 7).

The CLI contract: exit code 2, one line on stderr naming what is wrong (no traceback, no
megabyte echoed back), and no batch in the database. A UTF-8 BOM, as spreadsheet programs
and Windows editors write it, is accepted at the start of every manifest type and schema.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.images import png_bytes
from tests.support.processes import qocr_env

PROCESS_TIMEOUT_SECONDS = 60
BOM = b"\xef\xbb\xbf"

Submit = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "scan.png"
    path.write_bytes(png_bytes(1))
    return path


@pytest.fixture
def qocr(tmp_path: Path, redis_url: str) -> Submit:
    """``qocr ARGS`` in a fresh process on a SQLite file in ``tmp_path``."""
    env = qocr_env(
        QOCR_DATABASE_URL=f"sqlite:///{tmp_path / 'qocr.db'}",
        QOCR_BROKER_URL=redis_url,
        QOCR_CONFIG=str(tmp_path / "qocr.toml"),
        DASHSCOPE_API_KEY="sk-inputs-test-0001",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qocr", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT_SECONDS,
        )

    return run


def batch_count(tmp_path: Path) -> int:
    database = tmp_path / "qocr.db"
    if not database.exists():
        return 0
    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "batches" not in tables:
            return 0
        return int(conn.execute("SELECT count(*) FROM batches").fetchone()[0])


def assert_refused(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2 and one short ``Error:`` line naming ``words``; returns that line."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    [line] = lines
    assert line.startswith("Error: "), line
    assert len(line) < 1000, line[:1000]
    for word in words:
        assert word in line, line
    return line


def test_a_megabyte_manifest_line_names_its_line(qocr: Submit, tmp_path: Path, image: Path) -> None:
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{image}\n{'a' * 1_000_000}.png\n", encoding="utf-8")
    assert_refused(qocr("submit", f"@{manifest}"), "list.txt:2", "too long")
    assert batch_count(tmp_path) == 0


def test_a_long_path_argument_is_refused_without_being_echoed(qocr: Submit, tmp_path: Path) -> None:
    line = assert_refused(qocr("submit", "b" * 100_000 + ".png"), "source #1", "too long")
    assert line.count("b") < 1000
    assert batch_count(tmp_path) == 0


def test_a_deeply_nested_jsonl_line_names_its_line(qocr: Submit, tmp_path: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    nested = "[" * 100_000 + "]" * 100_000
    manifest.write_text(f'{{"source": {nested}}}\n', encoding="utf-8")
    assert_refused(qocr("submit", f"@{manifest}"), "list.jsonl:1", "nested")
    assert batch_count(tmp_path) == 0


def test_an_oversized_csv_field_names_its_line(qocr: Submit, tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"source\nhttps://example.com/{'c' * 300_000}.png\n", encoding="utf-8")
    assert_refused(qocr("submit", f"@{manifest}"), "list.csv:2")
    assert batch_count(tmp_path) == 0


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (("[" * 30_000 + "]" * 30_000).encode(), ("--schema", "nested")),  # under 64 KB
        (b'{"a": ' * 5_000 + b'""' + b"}" * 5_000, ("--schema", "nested")),
        (bytes(range(256)) * 40, ("--schema", "not UTF-8")),
        (json.dumps({f"field_{n}": "" for n in range(10_000)}).encode(), ("--schema", "65536")),
    ],
    ids=["nested-list", "nested-object", "binary", "too-large"],
)
def test_a_bad_schema_file_is_one_clear_line(
    qocr: Submit, tmp_path: Path, image: Path, content: bytes, words: tuple[str, ...]
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_bytes(content)
    assert_refused(qocr("submit", str(image), "--schema", str(schema)), *words)
    assert batch_count(tmp_path) == 0


def test_a_fifo_named_at_submit_is_refused_without_blocking(qocr: Submit, tmp_path: Path) -> None:
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    assert_refused(qocr("submit", str(fifo)), "FIFO")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{fifo}\n", encoding="utf-8")
    assert_refused(qocr("submit", f"@{manifest}"), "list.txt:1", "FIFO")
    assert batch_count(tmp_path) == 0


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("list.txt", "{image}\n"),
        ("list.csv", "source,note\n{image},first\n"),
        ("list.jsonl", '{{"source": "{image}"}}\n'),
    ],
)
def test_a_bom_is_accepted_at_the_start_of_every_manifest(
    qocr: Submit, tmp_path: Path, image: Path, name: str, body: str
) -> None:
    manifest = tmp_path / name
    manifest.write_bytes(BOM + body.format(image=image).encode())
    done = qocr("submit", f"@{manifest}", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["items"] == 1
    assert batch_count(tmp_path) == 1


def test_a_bom_is_accepted_at_the_start_of_a_schema(
    qocr: Submit, tmp_path: Path, image: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_bytes(BOM + b'{"invoice_number": "", "total": ""}')
    done = qocr("submit", str(image), "--schema", str(schema), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert batch_count(tmp_path) == 1


@pytest.mark.parametrize("template", ["{date:>999999999}", "{schedule:{time}}", "{date:.99999999}"])
def test_a_batch_name_template_with_a_huge_format_spec_is_refused(
    qocr: Submit, tmp_path: Path, image: Path, template: str
) -> None:
    (tmp_path / "qocr.toml").write_text(
        f'[schedules.nightly]\nevery = "1h"\nsources = ["{image}"]\nbatch_name = "{template}"\n',
        encoding="utf-8",
    )
    for command in (["schedule", "list"], ["schedule", "run", "nightly"]):
        assert_refused(qocr(*command), "nightly", "batch_name")
    assert batch_count(tmp_path) == 0
