"""Real `python -m qocr` processes: what each command imports, and a database that is down.

`qocr --help` must not import SQLAlchemy, Celery, boto3, aiohttp or httpx; the read
commands must not import Celery, boto3 or aiohttp. The imports are read from the process's
own `-X importtime` report, so an eager import added anywhere under them fails here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qocr.emulator.testing import running_emulator
from tests.support.cli_batches import API_KEY, invoke, run_batch
from tests.support.images import write_pngs
from tests.support.processes import qocr_env

NOT_FOR_HELP = {"sqlalchemy", "celery", "kombu", "boto3", "botocore", "aiohttp", "httpx"}
NOT_FOR_READS = {"celery", "kombu", "billiard", "boto3", "botocore", "aiohttp"}
PROCESS_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str  # without the importtime report
    imported: set[str]  # top-level package names


def qocr(args: list[str], env: dict[str, str], cwd: Path) -> Run:
    """``python -X importtime -m qocr ARGS`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "qocr", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT_SECONDS,
    )
    imported, other = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[1].strip()
            imported.add(name.split(".")[0])
        else:
            other.append(line)
    return Run(done.returncode, done.stdout, "\n".join(other), imported)


@dataclass(frozen=True)
class Batch:
    env: dict[str, str]
    tmp: Path
    batch_id: str
    item_id: str


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Batch]:
    """A SQLite database with one finished batch (two results, one failed item)."""
    tmp = tmp_path_factory.mktemp("startup")
    url = f"sqlite:///{tmp / 'qocr.db'}"
    folder = tmp / "in"
    write_pngs(folder, 2)
    (folder / "empty.png").write_bytes(b"")
    with running_emulator(recognizer="hash") as emulator, pytest.MonkeyPatch.context() as env:
        env.chdir(tmp)
        env.setenv("DASHSCOPE_API_KEY", API_KEY)
        env.setenv("QOCR_DATABASE_URL", url)
        env.setenv("QOCR_BASE_URL", emulator.base_url)
        batch_id = run_batch(str(folder))
        lines = invoke("results", str(batch_id)).output.splitlines()
    item_id = next(json.loads(line)["item_id"] for line in lines if '"succeeded"' in line)
    environment = qocr_env(DASHSCOPE_API_KEY=API_KEY, QOCR_DATABASE_URL=url)
    yield Batch(environment, tmp, str(batch_id), str(item_id))


def test_help_imports_no_database_broker_s3_or_http_library(batch: Batch) -> None:
    run = qocr(["--help"], batch.env, batch.tmp)

    assert run.code == 0, run.stderr
    assert "status" in run.stdout and "Export the items of BATCH" in run.stdout
    assert "qocr" in run.imported  # the report was read
    assert run.imported & NOT_FOR_HELP == set()


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "{batch}"],
        ["status", "{batch}", "--json"],
        ["results", "{batch}"],
        ["results", "{batch}", "--format", "csv", "--out", "export.csv"],
        ["show", "{item}"],
        ["show", "{item}", "--json"],
    ],
)
def test_read_commands_import_neither_celery_nor_boto3_nor_aiohttp(
    batch: Batch, args: list[str]
) -> None:
    args = [a.format(batch=batch.batch_id, item=batch.item_id) for a in args]
    run = qocr(args, batch.env, batch.tmp)

    assert run.code == 0, run.stderr
    assert run.stdout.strip()
    assert "sqlalchemy" in run.imported  # the command did read the database
    assert run.imported & NOT_FOR_READS == set()
    # A SQLite file at the newest revision is opened without Alembic (no migration to run).
    assert "alembic" not in run.imported


# -- a database that cannot be reached -------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "1", "--json"],
        ["results", "1", "--format", "csv"],
        ["show", "1"],
        ["retry", "1"],
        ["cancel", "1"],
        ["db", "upgrade"],
        ["db", "current"],
        ["submit", "in"],
    ],
)
def test_an_unreachable_postgresql_is_one_line_and_exit_2(args: list[str], tmp_path: Path) -> None:
    write_pngs(tmp_path / "in", 1)
    url = f"postgresql://qocr:pw-s3cret@127.0.0.1:{closed_port()}/qocr"
    env = qocr_env(DASHSCOPE_API_KEY=API_KEY, QOCR_DATABASE_URL=url)

    run = qocr(args, env, tmp_path)

    assert run.code == 2, run.stderr
    [line] = run.stderr.strip().splitlines()
    # "cannot open the database" when it is opened, "the database failed" when it drops later.
    assert line.startswith("Error: ") and " postgresql://qocr:***@127.0.0.1:" in line
    assert line.endswith("Connection refused")
    assert "pw-s3cret" not in run.stdout + run.stderr


def test_a_sqlite_file_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-folder' / 'qocr.db'}"
    env = qocr_env(QOCR_DATABASE_URL=url)

    run = qocr(["status"], env, tmp_path)

    assert run.code == 2, run.stderr
    assert (
        run.stderr.strip() == f"Error: cannot open the database {url}: unable to open database file"
    )
