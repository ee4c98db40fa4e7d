"""Fixtures for the Qwen-OCR unit tests: a sample image and a no-network guard."""

from __future__ import annotations

import httpx
import pytest

from tests.support.qwen_samples import make_image


@pytest.fixture
def png() -> bytes:
    return make_image(200, 100)


@pytest.fixture
def forbidden_transport() -> httpx.MockTransport:
    """A transport that fails the test if any request reaches it."""

    def handler(request: httpx.Request) -> httpx.Response:
        pytest.fail(f"no request should have been sent, got {request.method} {request.url}")

    return httpx.MockTransport(handler)
