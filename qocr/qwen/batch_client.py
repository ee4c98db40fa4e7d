"""The Batch API's HTTP calls (files and batches), over httpx; shapes in :mod:`batch_api`.

Every failure is a :class:`~qocr.qwen.errors.QwenError` classified like a realtime call's
(:mod:`qocr.qwen.classify`), with the API key redacted. Nothing here retries: the caller's
next step (a worker task, the dispatcher's next poll) is the retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from qocr.qwen.batch_api import BATCHES_PATH, FILES_PATH, ProviderBatch, parse_batch
from qocr.qwen.batch_limits import COMPLETION_WINDOW, FILE_PURPOSE
from qocr.qwen.catalog import Region
from qocr.qwen.classify import error_from_response
from qocr.qwen.core import ClientCore
from qocr.qwen.errors import ProtocolError, QwenError
from qocr.qwen.parse import load_json
from qocr.version import __version__

# Files and batch objects are small; only uploads and downloads take long.
TIMEOUT = httpx.Timeout(connect=10.0, read=120.0, write=600.0, pool=10.0)
# How many recent files a restarted upload looks through for its own earlier upload.
RECENT_FILES = 100


class BatchClient:
    """The files and batches endpoints under one region's root (or the emulator's)."""

    def __init__(
        self,
        api_key: Any,
        *,
        region: Region = "cn",
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = ClientCore(api_key, region=region, base_url=base_url)
        key = api_key.get_secret_value() if hasattr(api_key, "get_secret_value") else api_key
        self._secret = str(key)
        self._http = httpx.Client(
            base_url=self._core.base_url,
            transport=transport,
            timeout=TIMEOUT,
            headers={"Authorization": f"Bearer {key}", "User-Agent": f"qocr/{__version__}"},
        )

    def __repr__(self) -> str:
        return f"BatchClient(base_url={self._core.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- files ----------------------------------------------------------------------

    def upload(self, filename: str, path: Path) -> str:
        """Upload a JSONL input file (``purpose=batch``); returns its file id."""
        with path.open("rb") as handle:
            data = self._json(
                "POST",
                FILES_PATH,
                files={"file": (filename, handle, "application/jsonl")},
                data={"purpose": FILE_PURPOSE},
            )
        return _id(data)

    def find_file(self, filename: str) -> str | None:
        """The id of a recent input file named ``filename`` (an upload whose answer was lost)."""
        params = {"purpose": FILE_PURPOSE, "limit": RECENT_FILES, "order": "desc"}
        data = self._json("GET", FILES_PATH, params=params)
        for entry in _listed(data):
            if entry.get("filename") == filename and entry.get("status") != "error":
                return _id(entry)
        return None

    def download(self, file_id: str, destination: Path) -> None:
        """Stream a file's content (an output or error file) to ``destination``."""
        try:
            with self._http.stream("GET", f"{FILES_PATH}/{file_id}/content") as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response)
                with destination.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise self._core.scrub(self._core.transport_error(exc, stream=False)) from None

    def delete_file(self, file_id: str) -> None:
        self._json("DELETE", f"{FILES_PATH}/{file_id}")

    # -- batches ----------------------------------------------------------------------

    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: dict[str, str]
    ) -> ProviderBatch:
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": COMPLETION_WINDOW,
            "metadata": metadata,
        }
        return parse_batch(self._json("POST", BATCHES_PATH, json=body))

    def find_batch(self, input_file_id: str) -> ProviderBatch | None:
        """The batch already made from ``input_file_id`` (a create whose answer was lost)."""
        data = self._json("GET", BATCHES_PATH, params={"input_file_ids": input_file_id})
        for entry in _listed(data):
            if entry.get("input_file_id") == input_file_id:
                return parse_batch(entry)
        return None

    def retrieve(self, batch_id: str) -> ProviderBatch:
        return parse_batch(self._json("GET", f"{BATCHES_PATH}/{batch_id}"))

    def cancel(self, batch_id: str) -> ProviderBatch:
        return parse_batch(self._json("POST", f"{BATCHES_PATH}/{batch_id}/cancel"))

    # -- plumbing ---------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._core.scrub(self._core.transport_error(exc, stream=False)) from None
        if response.status_code >= 400:
            raise self._error(response)
        try:
            return load_json(response.content)
        except ProtocolError as exc:
            raise self._core.scrub(exc) from None

    def _error(self, response: httpx.Response) -> QwenError:
        error = error_from_response(
            response.status_code, response.content, response.headers, secret=self._secret
        )
        return self._core.scrub(error)


def _id(data: Any) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("id"), str):
        raise ProtocolError("unexpected answer: no id")
    return str(data["id"])


def _listed(data: Any) -> Iterator[dict[str, Any]]:
    entries = data.get("data") if isinstance(data, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict):
            yield entry
