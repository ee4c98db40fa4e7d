"""A whole qocr deployment for acceptance tests: emulator, PostgreSQL, Redis, worker processes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from qocr.emulator.testing import EmulatorHandle
from qocr.models import Item, ItemState, Result
from qocr.models.db import make_engine
from qocr.models.store import Store
from tests.support.processes import QOCR, qocr_process, wait_until

API_KEY = "sk-acceptance-0123456789"


@dataclass
class Deployment:
    """Everything a test needs to run real `qocr` processes against real services."""

    tmp: Path
    database_url: str
    broker_url: str
    emulator: EmulatorHandle
    extra_env: dict[str, str] = field(default_factory=dict)
    _store: Store | None = None

    def env(self, **overrides: str) -> dict[str, str]:
        from tests.support.processes import qocr_env

        values = {
            "DASHSCOPE_API_KEY": API_KEY,
            "QOCR_DATABASE_URL": self.database_url,
            "QOCR_BROKER_URL": self.broker_url,
            "QOCR_BASE_URL": self.emulator.base_url,
            "QOCR_LOG_LEVEL": "INFO",
            "QOCR_SPOOL_DIR": str(self.tmp / "kept-results"),
            **self.extra_env,
            **overrides,
        }
        return qocr_env(**values)

    def worker(
        self, *args: str, name: str = "worker", **env: str
    ) -> AbstractContextManager[subprocess.Popen[bytes]]:
        command = ["worker", "--pool", "threads", "-c", "4", *args]
        return qocr_process(command, self.env(**env), self.tmp / f"{name}.log", cwd=self.tmp)

    def qocr(self, *args: str, **env: str) -> str:
        """One ``qocr`` command against this deployment; its output (it must succeed)."""
        completed = subprocess.run(
            [*QOCR, *args],
            env=self.env(**env),
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert completed.returncode == 0, completed.stderr
        return completed.stdout

    def status(self, *args: str) -> dict[str, Any]:
        """``qocr status ARGS --json``, read."""
        document: dict[str, Any] = json.loads(self.qocr("status", *args, "--json"))
        return document

    def submit(self, *args: str, **env: str) -> int:
        output = self.qocr("submit", "--json", *args, **env)
        return int(json.loads(output.strip().splitlines()[-1])["id"])

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(make_engine(self.database_url))
        return self._store

    def counts(self, batch_id: int) -> dict[ItemState, int]:
        return self.store.counts_by_state(batch_id)

    def wait_finished(self, batch_id: int, timeout: float) -> bool:
        return wait_until(lambda: not self.store.batch_is_open(batch_id), timeout, interval=0.5)

    def results_by_source(self, batch_id: int) -> dict[str, str]:
        with self.store.sessions() as session:
            rows = session.execute(
                select(Item.source, Result.text)
                .join(Result, Result.item_id == Item.id)
                .where(Item.batch_id == batch_id)
            )
            return {source: text for source, text in rows}

    def failures(self, batch_id: int) -> dict[str, tuple[str | None, str | None]]:
        """source → (error code, message) of every item that did not succeed."""
        with self.store.sessions() as session:
            rows = session.execute(
                select(Item.source, Item.last_error_code, Item.last_error_message).where(
                    Item.batch_id == batch_id, Item.state != ItemState.SUCCEEDED
                )
            )
            return {source: (code, message) for source, code, message in rows}

    def result_count(self, batch_id: int) -> int:
        with self.store.sessions() as session:
            count = session.scalar(
                select(func.count())
                .select_from(Result)
                .join(Item, Item.id == Result.item_id)
                .where(Item.batch_id == batch_id)
            )
            return int(count or 0)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in self.tmp.glob("*.log"))

    def close(self) -> None:
        if self._store is not None:
            self._store.engine.dispose()


# What the acceptance tier's ``deploy`` fixture gives: ``deploy(**emulator_options)``.
MakeDeployment = Callable[..., Deployment]
