"""QwenOCRClient: the synchronous transport (httpx.Client), for Celery worker threads.

One client holds one connection pool; create it once per process and reuse it.
Retries are not done here: wrap calls with :func:`qocr.qwen.retry.retry_policy`.
Every call, plain or streamed, is read through the same bounded loop: a total deadline
(``deadline_seconds``, enforced per chunk, and by :mod:`qocr.qwen.watchdog` on a blocked
read) and a size cap (``max_response_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import httpx

from qocr.qwen.budget import DEFAULT_DEADLINE_SECONDS, CallBudget
from qocr.qwen.caps import MAX_RESPONSE_BYTES
from qocr.qwen.catalog import Api, Region
from qocr.qwen.core import DEFAULT_TIMEOUTS, ClientCore, Timeouts
from qocr.qwen.errors import QwenError
from qocr.qwen.images import ImageSource
from qocr.qwen.options import RecognizeOptions, Stop
from qocr.qwen.result import OCRResult
from qocr.qwen.tasks import Task
from qocr.qwen.watchdog import Alarm, arm
from qocr.version import __version__

OnChunk = Callable[[str], object]


class QwenOCRClient:
    """Calls Qwen-OCR over either API and returns normalized :class:`OCRResult` values."""

    def __init__(
        self,
        api_key: Any,
        *,
        region: Region = "intl",
        base_url: str | None = None,
        api: Api = "compatible",
        timeout: float | Timeouts = DEFAULT_TIMEOUTS,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = ClientCore(
            api_key,
            region=region,
            base_url=base_url,
            api=api,
            timeout=timeout,
            deadline_seconds=deadline_seconds,
            max_response_bytes=max_response_bytes,
        )
        self._http = httpx.Client(
            transport=transport,
            timeout=self._core.timeouts.httpx(stream=False),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": f"qocr/{__version__}"},
        )

    @property
    def api(self) -> Api:
        return self._core.api

    @property
    def base_url(self) -> str:
        return self._core.base_url

    def __repr__(self) -> str:
        return f"QwenOCRClient(api={self.api!r}, base_url={self.base_url!r})"

    def __enter__(self) -> QwenOCRClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def recognize(
        self,
        image: ImageSource,
        *,
        model: str,
        task: Task | None = None,
        prompt: str | None = None,
        result_schema: dict[str, Any] | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        enable_rotate: bool | None = None,
        max_tokens: int | None = None,
        stream: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        presence_penalty: float | None = None,
        seed: int | None = None,
        stop: Stop | list[str] | list[int] | None = None,
        logprobs: bool | None = None,
        top_logprobs: int | None = None,
        on_chunk: OnChunk | None = None,
    ) -> OCRResult:
        """Recognize one image (URL, data URL, path or bytes); see :class:`RecognizeOptions`."""
        options = RecognizeOptions(
            model=model,
            task=task,
            prompt=prompt,
            result_schema=result_schema,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            enable_rotate=enable_rotate,
            max_tokens=max_tokens,
            stream=stream,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            presence_penalty=presence_penalty,
            seed=seed,
            stop=cast(Stop | None, tuple(stop) if isinstance(stop, list) else stop),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )
        return self.recognize_with(image, options, on_chunk=on_chunk)

    def recognize_with(
        self, image: ImageSource, options: RecognizeOptions, on_chunk: OnChunk | None = None
    ) -> OCRResult:
        """Recognize one image with stored options; ``on_chunk`` gets each streamed delta.

        The whole call, plain or streamed, ends within ``deadline_seconds`` (a retryable
        :class:`APITimeoutError`, code ``deadline_exceeded``); an answer over
        ``max_response_bytes`` raises :class:`ResponseTooLargeError` instead of being kept.
        """
        request = self._core.prepare(image, options)
        budget = self._core.budget()
        alarm: Alarm | None = None
        try:
            timeout = budget.timeout(self._core.timeouts.httpx(stream=request.stream))
            with self._http.stream(
                "POST", request.url, headers=request.headers, json=request.json, timeout=timeout
            ) as response:
                alarm = arm(response.extensions.get("network_stream"), budget.deadline_at)
                try:
                    return self._answer(response, options, budget, on_chunk)
                finally:
                    if alarm is not None:
                        alarm.cancel()  # before the connection goes back to the pool
        except (httpx.HTTPError, QwenError) as exc:
            cut = alarm is not None and alarm.fired
            if cut or (isinstance(exc, httpx.HTTPError) and budget.expired()):
                raise self._core.scrub(budget.deadline_error()) from exc
            if isinstance(exc, httpx.HTTPError):
                raise self._core.transport_error(exc, stream=request.stream) from exc
            self._core.scrub(exc)
            raise

    def _answer(
        self,
        response: httpx.Response,
        options: RecognizeOptions,
        budget: CallBudget,
        on_chunk: OnChunk | None,
    ) -> OCRResult:
        budget.expect(response.headers)
        if options.stream and self._core.is_stream(response.status_code, response.headers):
            decoder = self._core.decoder(options, response.headers)
            for chunk in response.iter_bytes():
                budget.take(len(chunk))
                for delta in decoder.feed(chunk):
                    if on_chunk is not None:
                        on_chunk(delta)
            return decoder.close()
        body = bytearray()
        for chunk in response.iter_bytes():
            budget.take(len(chunk))
            body += chunk
        result = self._core.result(options, response.status_code, response.headers, bytes(body))
        if options.stream and on_chunk is not None and result.text:
            on_chunk(result.text)  # a stream request answered in one piece
        return result
