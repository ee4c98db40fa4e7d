"""Paid results that could not be saved yet, kept on local disk until the database answers.

The provider was paid for these answers; calling again because PostgreSQL restarted at the
wrong moment would pay twice. A result whose save failed is written here (one JSON file per
call, written to a temporary name and renamed, so a crash never leaves half a file) and a
background thread saves it as soon as the database answers again, with
``Store.save_kept_result`` (which takes it even if the item's lease ran out meanwhile). A
worker restarted on the same machine saves what its predecessor kept. Each file is locked
while it is saved, so several processes can share one directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from qocr.models.records import AttemptRecord, ClaimedItem, ResultRecord
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store
from qocr.worker import metrics

log = logging.getLogger(__name__)

SUFFIX = ".result.json"


class ResultSpool:
    """A directory of kept results, and the thread that saves them."""

    def __init__(
        self,
        directory: Path,
        store: Store,
        interval_seconds: float = 1.0,
        autostart: bool = True,
    ) -> None:
        """``autostart``: :meth:`keep` starts the saver thread (off: call :meth:`save_all`)."""
        self.directory = directory
        self._autostart = autostart
        self._store = store
        self._interval_seconds = interval_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.on_saved: Callable[[int], None] = lambda item_id: None

    def keep(self, item: ClaimedItem, attempt: AttemptRecord, result: ResultRecord) -> Path:
        """Write the result to disk; the saver thread takes it from there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {
            "item": asdict(item),
            "attempt": _encode(asdict(attempt)),
            "result": asdict(result),
        }
        name = f"{item.item_id}-{item.lease_token}-{attempt.number or 0}{SUFFIX}"
        path = self.directory / name
        temporary = path.with_suffix(".tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(document, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        log.warning("item %s: result kept in %s until the database answers", item.item_id, path)
        if self._autostart:
            self.start()
            self._wake.set()
        return path

    def pending(self) -> int:
        return sum(1 for _ in self._files())

    def save_all(self) -> int:
        """Save every kept result the database takes now; returns how many left the spool."""
        saved = 0
        for path in self._files():
            with _locked(path) as handle:
                if handle is None:
                    continue  # another process is saving it
                try:
                    item, attempt, result = _decode(json.load(handle))
                except (OSError, ValueError, KeyError, TypeError):
                    log.exception("kept result %s is unreadable; left in place", path)
                    continue
                try:
                    kept = self._store.save_kept_result(item, attempt, result)
                except Exception as exc:  # still away: the next round tries again
                    log.info("kept result of item %s not saved yet: %s", item.item_id, exc)
                    return saved
                path.unlink(missing_ok=True)
                saved += 1
                self.on_saved(item.item_id)
                if kept:
                    metrics.record_finished("succeeded")
                    log.info("item %s: kept result saved", item.item_id)
                else:
                    log.warning("item %s had finished meanwhile; kept result dropped", item.item_id)
        return saved

    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="qocr-spool", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_seconds)
            self._wake.clear()
            try:
                self.save_all()
            except Exception:
                log.exception("saving kept results failed; trying again")

    def _files(self) -> Iterator[Path]:
        if not self.directory.is_dir():
            return iter(())
        return iter(sorted(self.directory.glob(f"*{SUFFIX}")))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[Any]:
    try:
        handle = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        yield None
        return
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if not path.exists():  # saved and removed by another process just before
            yield None
            return
        yield handle


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in values.items()
    }


def _decode(document: dict[str, Any]) -> tuple[ClaimedItem, AttemptRecord, ResultRecord]:
    attempt = dict(document["attempt"])
    for key in ("started_at", "ended_at"):
        attempt[key] = datetime.fromisoformat(attempt[key])
    attempt["outcome"] = AttemptOutcome(attempt["outcome"])
    result_names = {field.name for field in fields(ResultRecord)}
    result = {key: value for key, value in document["result"].items() if key in result_names}
    return ClaimedItem(**document["item"]), AttemptRecord(**attempt), ResultRecord(**result)
