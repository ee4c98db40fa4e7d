"""QwenOCRClient: the synchronous transport (httpx.Client), for Celery worker threads.

One client holds one connection pool; create it once per process and reuse it.
Retries are not done here: wrap calls with :func:`qocr.qwen.retry.retry_policy`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

import httpx

from qocr import __version__
from qocr.qwen.catalog import Api, Region
from qocr.qwen.core import DEFAULT_TIMEOUTS, ClientCore, Timeouts
from qocr.qwen.errors import QwenError
from qocr.qwen.images import ImageSource
from qocr.qwen.options import RecognizeOptions, Stop
from qocr.qwen.result import OCRResult
from qocr.qwen.tasks import Task

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
        max_connections: int = 20,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._core = ClientCore(api_key, region=region, base_url=base_url, api=api, timeout=timeout)
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
        """Recognize one image with stored options; ``on_chunk`` gets each streamed delta."""
        request = self._core.prepare(image, options)
        try:
            if request.stream:
                return self._stream(request.url, request.headers, request.json, options, on_chunk)
            response = self._http.post(
                request.url,
                headers=request.headers,
                json=request.json,
                timeout=self._core.timeouts.httpx(stream=False),
            )
            return self._core.result(
                options, response.status_code, response.headers, response.content
            )
        except httpx.HTTPError as exc:
            raise self._core.transport_error(exc, stream=request.stream) from exc
        except QwenError as exc:
            self._core.scrub(exc)
            raise

    def _stream(
        self,
        url: str,
        headers: dict[str, str],
        body: dict[str, Any],
        options: RecognizeOptions,
        on_chunk: OnChunk | None,
    ) -> OCRResult:
        timeout = self._core.timeouts.httpx(stream=True)
        with self._http.stream("POST", url, headers=headers, json=body, timeout=timeout) as resp:
            if not self._core.is_stream(resp.status_code, resp.headers):
                result = self._core.result(options, resp.status_code, resp.headers, resp.read())
                if on_chunk is not None and result.text:
                    on_chunk(result.text)
                return result
            decoder = self._core.decoder(options, resp.headers)
            for chunk in resp.iter_bytes():
                for delta in decoder.feed(chunk):
                    if on_chunk is not None:
                        on_chunk(delta)
            return decoder.close()
