"""The emulator's Batch API: files and batches kept in memory, run in the background.

A batch is validated like the real service validates its input file (JSONL, at most
50,000 lines and 6 MB a line, unique ``custom_id``, one model, every ``url`` the batch's
endpoint), then its lines run one by one through the same recognition as a realtime call,
``lines_per_second`` at a time, outside the realtime rate limits. Status goes
``validating → in_progress → finalizing → completed`` (or ``failed`` on a bad file,
``expired`` past its window, ``cancelling → cancelled``). Successful lines go to the output
file, failed ones to the error file; lines never run are in neither.

Faults for tests (``POST /_batch_faults``, or :meth:`BatchService.set_faults`): ``plans``,
a list taken one per batch created (``{"error_lines": n}`` answers its first ``n`` lines
with a 500; ``{"expire_after_lines": n}`` expires it after ``n`` lines), and
``upload_delays``, seconds taken one per upload that the answer to it is held back (the
file is stored first: an upload whose answer is lost).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qocr.qwen.batch_limits import (
    COMPLETION_WINDOW,
    ENDPOINT,
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    MAX_LINES,
    TEST_ENDPOINT,
    TEST_MODEL,
)

# line body → (status code, response body); raises nothing.
RunLine = Callable[[Mapping[str, Any], str], Awaitable[tuple[int, dict[str, Any]]]]
ENDPOINTS = (ENDPOINT, TEST_ENDPOINT)


class BatchApiError(Exception):
    """A 4xx answer of the files or batches endpoints."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass
class EmulatedBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: int
    expires_at: int
    status: str = "validating"
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    stamps: dict[str, int | None] = field(default_factory=dict)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def document(self) -> dict[str, Any]:
        stamp = self.stamps.get
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": COMPLETION_WINDOW,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": stamp("in_progress_at"),
            "expires_at": self.expires_at,
            "finalizing_at": stamp("finalizing_at"),
            "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"),
            "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"),
            "cancelled_at": stamp("cancelled_at"),
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


@dataclass
class BatchFaults:
    """Per-batch plans and per-upload delays, taken in order as batches and uploads come."""

    plans: list[dict[str, int]] = field(default_factory=list)
    upload_delays: list[float] = field(default_factory=list)

    def update(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(changes) - {"plans", "upload_delays"}
        if unknown:
            raise ValueError(f"unknown batch fault settings: {', '.join(sorted(unknown))}")
        if "plans" in changes:
            plans = changes["plans"]
            if not isinstance(plans, list) or not all(_plan_ok(plan) for plan in plans):
                raise ValueError("plans: a list of {error_lines: n} / {expire_after_lines: n}")
            self.plans = [dict(plan) for plan in plans]
        if "upload_delays" in changes:
            delays = changes["upload_delays"]
            if not isinstance(delays, list) or not all(
                isinstance(d, int | float) and d >= 0 for d in delays
            ):
                raise ValueError("upload_delays: a list of seconds")
            self.upload_delays = [float(d) for d in delays]
        return {"plans": self.plans, "upload_delays": self.upload_delays}


def _plan_ok(plan: Any) -> bool:
    keys = {"error_lines", "expire_after_lines"}
    return (
        isinstance(plan, dict)
        and set(plan) <= keys
        and all(isinstance(v, int) and v >= 0 for v in plan.values())
    )


class BatchService:
    """The files and batches of one emulator (used on its event loop only)."""

    def __init__(
        self,
        run_line: RunLine,
        new_id: Callable[[str], str],
        lines_per_second: float,
        window_seconds: float,
    ) -> None:
        self.run_line = run_line
        self.new_id = new_id
        self.lines_per_second = lines_per_second
        self.window_seconds = window_seconds
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, EmulatedBatch] = {}
        self.faults = BatchFaults()
        self.counters: Counter[str] = Counter()
        self.uploads_by_name: Counter[str] = Counter()
        self.batches_by_file: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- files --------------------------------------------------------------------------

    async def upload(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        if purpose != "batch":
            raise BatchApiError(400, "InvalidParameter", "purpose must be 'batch'")
        if len(data) > MAX_FILE_BYTES:
            raise BatchApiError(400, "InvalidParameter", "the file is larger than 500 MB")
        stored = StoredFile(self.new_id("file-batch-"), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        self.counters["uploads"] += 1
        self.uploads_by_name[filename] += 1
        if self.faults.upload_delays:
            # Stored, but the answer is late: a client killed meanwhile never learns the id.
            await asyncio.sleep(self.faults.upload_delays.pop(0))
        return stored

    def file(self, file_id: str) -> StoredFile:
        stored = self.files.get(file_id)
        if stored is None:
            raise BatchApiError(404, "NotFound", f"file {file_id} not found")
        return stored

    def delete_file(self, file_id: str) -> dict[str, Any]:
        self.file(file_id)
        del self.files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def list_files(self, purpose: str | None, limit: int, newest_first: bool) -> list[StoredFile]:
        files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        files.sort(key=lambda f: (f.created_at, f.id), reverse=newest_first)
        return files[:limit]

    # -- batches ------------------------------------------------------------------------

    def create(self, body: Any) -> EmulatedBatch:
        if not isinstance(body, Mapping):
            raise BatchApiError(400, "InvalidParameter", "the body must be a JSON object")
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str):
            raise BatchApiError(400, "InvalidParameter", "input_file_id is required")
        self.file(file_id)
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise BatchApiError(400, "InvalidParameter", f"endpoint must be one of {ENDPOINTS}")
        if body.get("completion_window") != COMPLETION_WINDOW:
            raise BatchApiError(400, "InvalidParameter", "completion_window must be '24h'")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise BatchApiError(400, "InvalidParameter", "metadata must be an object")
        now = int(time.time())
        batch = EmulatedBatch(
            id=self.new_id("batch_"),
            input_file_id=file_id,
            endpoint=str(endpoint),
            metadata={str(k): str(v) for k, v in (metadata or {}).items()},
            created_at=now,
            expires_at=now + int(self.window_seconds),
        )
        self.batches[batch.id] = batch
        self.counters["batches"] += 1
        self.batches_by_file[file_id] += 1
        plan = self.faults.plans.pop(0) if self.faults.plans else {}
        task = asyncio.get_running_loop().create_task(self._run(batch, plan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return batch

    def batch(self, batch_id: str) -> EmulatedBatch:
        found = self.batches.get(batch_id)
        if found is None:
            raise BatchApiError(404, "NotFound", f"batch {batch_id} not found")
        return found

    def list_batches(self, input_file_ids: list[str] | None, limit: int) -> list[EmulatedBatch]:
        batches = [
            b
            for b in self.batches.values()
            if not input_file_ids or b.input_file_id in input_file_ids
        ]
        batches.sort(key=lambda b: (b.created_at, b.id), reverse=True)
        return batches[:limit]

    def cancel(self, batch_id: str) -> EmulatedBatch:
        batch = self.batch(batch_id)
        if batch.status in ("validating", "in_progress", "finalizing"):
            batch.status = "cancelling"
            batch.stamps["cancelling_at"] = int(time.time())
            batch.cancel.set()
        return batch

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- running ------------------------------------------------------------------------

    async def _run(self, batch: EmulatedBatch, plan: dict[str, int]) -> None:
        lines = self._validate(batch)
        if lines is None:
            return
        batch.status = "in_progress"
        batch.stamps["in_progress_at"] = int(time.time())
        batch.total = len(lines)
        outputs: list[bytes] = []
        errors: list[bytes] = []
        deadline = time.monotonic() + self.window_seconds
        expire_after = plan.get("expire_after_lines")
        error_lines = plan.get("error_lines", 0)
        end = "completed"
        for index, line in enumerate(lines):
            if batch.cancel.is_set():
                end = "cancelled"
                break
            if time.monotonic() >= deadline or (expire_after is not None and index >= expire_after):
                end = "expired"
                break
            if self.lines_per_second > 0 and await _cancelled_within(
                batch.cancel, 1 / self.lines_per_second
            ):
                end = "cancelled"
                break
            request_id = self.new_id("")
            if index < error_lines:
                status, body = 500, _server_error(request_id)
            else:
                status, body = await self.run_line(line["body"], request_id)
            record = {
                "id": self.new_id("batch_req_"),
                "custom_id": line["custom_id"],
                "response": {"status_code": status, "request_id": request_id, "body": body},
                "error": None,
            }
            self.counters["lines"] += 1
            if status < 400:
                batch.completed += 1
                outputs.append(_jsonl(record))
            else:
                batch.failed += 1
                error = body.get("error") if isinstance(body, dict) else None
                record["error"] = {
                    "code": (error or {}).get("code") or "InternalError",
                    "message": (error or {}).get("message") or "the request failed",
                }
                errors.append(_jsonl(record))
        if end == "completed":
            batch.status = "finalizing"
            batch.stamps["finalizing_at"] = int(time.time())
            await asyncio.sleep(min(0.2, 1 / max(self.lines_per_second, 1)))
        self._finish(batch, end, outputs, errors)

    def _finish(
        self, batch: EmulatedBatch, end: str, outputs: list[bytes], errors: list[bytes]
    ) -> None:
        now = int(time.time())
        if outputs:
            batch.output_file_id = self._output(batch, "output", outputs, now)
        if errors:
            batch.error_file_id = self._output(batch, "error", errors, now)
        batch.status = end
        batch.stamps[f"{end}_at"] = now

    def _output(self, batch: EmulatedBatch, kind: str, lines: list[bytes], now: int) -> str:
        stored = StoredFile(
            self.new_id("file-batch_output-"),
            f"{batch.id}_{kind}.jsonl",
            "batch_output",
            b"".join(lines),
            now,
        )
        self.files[stored.id] = stored
        return stored.id

    def _validate(self, batch: EmulatedBatch) -> list[dict[str, Any]] | None:
        """The file's lines, or None after failing the batch with the service's reasons."""
        data = self.files[batch.input_file_id].data
        raw_lines = [line for line in data.split(b"\n") if line.strip()]
        problems: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        if not raw_lines:
            problems.append(_problem("empty_file", "the input file has no lines", None))
        if len(raw_lines) > MAX_LINES:
            problems.append(_problem("too_many_lines", f"more than {MAX_LINES} lines", None))
        for number, raw in enumerate(raw_lines[:MAX_LINES], start=1):
            if len(raw) > MAX_LINE_BYTES:
                problems.append(_problem("line_too_large", "a line is over 6 MB", number))
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                problems.append(_problem("invalid_json_line", "not a JSON line", number))
                continue
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            body = line.get("body") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or not isinstance(body, dict):
                problems.append(_problem("invalid_request", "custom_id and body needed", number))
                continue
            if custom_id in seen:
                problems.append(_problem("duplicate_custom_id", f"{custom_id} twice", number))
            if line.get("url") != batch.endpoint:
                problems.append(_problem("invalid_url", "url is not the endpoint", number))
            seen.add(custom_id)
            models.add(str(body.get("model")))
            lines.append(line)
        if len(models) > 1:
            problems.append(_problem("mixed_models", "one model per file", None))
        if TEST_MODEL in models and batch.endpoint != TEST_ENDPOINT:
            problems.append(_problem("invalid_url", f"{TEST_MODEL} needs {TEST_ENDPOINT}", None))
        if problems:
            batch.errors = problems[:100]
            batch.status = "failed"
            batch.stamps["failed_at"] = int(time.time())
            return None
        return lines


async def _cancelled_within(cancel: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` (a line's run time); True as soon as the batch is cancelled."""
    try:
        await asyncio.wait_for(cancel.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def _problem(code: str, message: str, line: int | None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def _server_error(request_id: str) -> dict[str, Any]:
    return {
        "error": {
            "message": "An internal error has occured, please try again later.",
            "type": "internal_error",
            "param": None,
            "code": "InternalError",
        },
        "request_id": request_id,
    }


def _jsonl(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
