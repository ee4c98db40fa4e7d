"""Streamed answers, sans I/O: feed the body's bytes, get text deltas, finish with an OCRResult.

Compatible streams: ``data: {chat.completion.chunk}`` events, deltas in
``choices[0].delta.content``, a last chunk with ``choices: []`` and ``usage`` (we always ask
for ``include_usage``), then ``data: [DONE]``. An ``{"error": ...}`` chunk is an error.

Native streams: one ``event:result`` per step with ``output.choices[0].message.content``;
``finish_reason`` is "null" until the last; ``event:error`` carries an error body. We ask
for ``incremental_output``, so every event's text is a delta and is appended as it is, even
when it happens to begin with the text we hold ("No", then "No. 12"): guessing from the
text would drop words. A decoder made with ``incremental=False`` reads a cumulative stream
(every event holds the whole text so far) instead.

A stream that stops before its final event (no ``[DONE]``/usage, no finish_reason) raises
:class:`APIConnectionError` from :meth:`StreamDecoder.close`: retryable, the answer is lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qocr.qwen.catalog import Api
from qocr.qwen.classify import error_from_response
from qocr.qwen.errors import APIConnectionError, ProtocolError
from qocr.qwen.parse import build_result, finish_reason, native_content, normalize_usage
from qocr.qwen.result import OCRResult, Usage
from qocr.qwen.sse import SSEEvent, SSEParser
from qocr.qwen.tasks import Task


class StreamDecoder:
    """Accumulates one streamed answer of ``api``; one instance per call."""

    def __init__(
        self,
        api: Api,
        *,
        task: Task | None = None,
        model: str | None = None,
        request_id: str | None = None,
        secret: str | None = None,
        incremental: bool = True,
    ) -> None:
        self.api = api
        self._incremental = incremental
        self._task = task
        self._model = model
        self._request_id = request_id
        self._secret = secret
        self._parser = SSEParser()
        self._parts: list[str] = []
        self._text_len = 0
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._ocr_result: Mapping[str, Any] | None = None
        self._logprobs: list[Any] = []
        self._done = False

    @property
    def text(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def feed(self, chunk: bytes) -> list[str]:
        """Parse ``chunk``; return the new text deltas (never empty strings)."""
        try:
            events = self._parser.feed(chunk)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"stream is not valid UTF-8: {exc}") from None
        return self._handle(events)

    def close(self) -> OCRResult:
        """End of the body: the final result, or an error if the stream was cut short."""
        self._handle(self._parser.close())
        if not self._complete():
            raise APIConnectionError(
                "stream ended before its final event (connection dropped?)",
                code="stream_incomplete",
                request_id=self._request_id,
            )
        return build_result(
            text=self.text,
            finish=self._finish,
            usage=self._usage,
            request_id=self._request_id,
            model=self._model,
            task=self._task,
            ocr_result=self._ocr_result,
            logprobs={"content": self._logprobs} if self._logprobs else None,
        )

    def _complete(self) -> bool:
        if self.api == "compatible":
            return self._done or (self._finish is not None and self._usage is not None)
        return self._finish is not None

    def _handle(self, events: list[SSEEvent]) -> list[str]:
        deltas: list[str] = []
        for event in events:
            delta = self._event(event)
            if delta:
                self._parts.append(delta)
                self._text_len += len(delta)
                deltas.append(delta)
        return deltas

    def _event(self, event: SSEEvent) -> str:
        if self.api == "compatible" and event.data.strip() == "[DONE]":
            self._done = True
            return ""
        if not event.data.strip():
            return ""
        try:
            data = json.loads(event.data)
        except ValueError:
            raise ProtocolError(f"stream event is not JSON: {event.data[:200]!r}") from None
        if not isinstance(data, dict):
            raise ProtocolError("stream event is not a JSON object")
        self._request_id = data.get("request_id") or self._request_id
        if event.event == "error" or "error" in data or (data.get("code") and "output" not in data):
            raise error_from_response(
                _comment_status(event), data, secret=self._secret, request_id=self._request_id
            )
        try:
            if self.api == "compatible":
                return self._compatible(data)
            return self._native(data)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProtocolError(f"unexpected {self.api} stream event: {exc!r}") from None

    def _compatible(self, data: dict[str, Any]) -> str:
        self._request_id = self._request_id or data.get("id")
        self._model = data.get("model") or self._model
        if data.get("usage"):
            self._usage = normalize_usage(data["usage"])
        choices = data.get("choices") or []
        if not choices:
            return ""
        choice = choices[0]
        self._collect_logprobs(choice.get("logprobs"))
        self._finish = finish_reason(choice.get("finish_reason")) or self._finish
        content = (choice.get("delta") or {}).get("content")
        return content if isinstance(content, str) else ""

    def _native(self, data: dict[str, Any]) -> str:
        if data.get("usage"):
            self._usage = normalize_usage(data["usage"])
        output = data["output"]
        choice = output["choices"][0]
        self._finish = finish_reason(choice.get("finish_reason")) or self._finish
        self._collect_logprobs(choice.get("logprobs"))
        text, ocr = native_content(choice.get("message") or {})
        if ocr:
            self._ocr_result = ocr
        return self._native_delta(text)

    def _native_delta(self, text: str) -> str:
        if self._incremental or not text:
            return text
        held = self.text
        if text.startswith(held):
            return text[len(held) :]
        raise ProtocolError("cumulative stream changed text it had already sent")

    def _collect_logprobs(self, logprobs: Any) -> None:
        if isinstance(logprobs, Mapping) and isinstance(logprobs.get("content"), list):
            self._logprobs.extend(logprobs["content"])


def _comment_status(event: SSEEvent) -> int | None:
    for comment in event.comments:
        if comment.upper().startswith("HTTP_STATUS/"):
            try:
                return int(comment.split("/", 1)[1])
            except ValueError:
                return None
    return None
