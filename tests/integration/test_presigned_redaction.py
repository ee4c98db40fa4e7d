"""With ``s3_mode=presign``, a provider error that echoes the image URL keeps its signature
out of the database, the logs and ``qocr show`` (issue 13, point 8).

Real SQL (SQLite and PostgreSQL), moto's S3 server for the presigned URL, the real client;
only the service's answer is scripted: a 400 whose message quotes the URL it was sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from qocr.cli import cli
from qocr.logs import RedactSecrets
from qocr.models import Attempt, Item, ItemState
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.store import Store
from qocr.qwen.client import QwenOCRClient
from qocr.qwen.options import RecognizeOptions
from qocr.s3 import make_s3_client
from qocr.settings import get_settings, load_settings
from qocr.worker.process import ItemProcessor, Outcome
from qocr.worker.runtime import memory_runtime
from tests.support.images import png_bytes

CREDENTIAL_PARAMETERS = {
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "awsaccesskeyid",
}


class EchoingService:
    """Answers 400 with a message that quotes the image URL of the request, as DashScope's
    download errors do; keeps the URL it saw."""

    def __init__(self) -> None:
        self.image_urls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        url = body["messages"][0]["content"][0]["image_url"]["url"]
        self.image_urls.append(url)
        message = f"Download the media resource timed out during the data inspection: {url}"
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_parameter"}
        return httpx.Response(400, json={"error": error, "request_id": "req-echo"})


@pytest.fixture
def presigned_item(
    engine: Engine, s3_endpoint: str, s3_bucket: str
) -> Iterator[tuple[ItemProcessor, Store, int, EchoingService]]:
    make_s3_client(s3_endpoint).put_object(Bucket=s3_bucket, Key="scan.png", Body=png_bytes(1))
    settings = load_settings(
        DASHSCOPE_API_KEY="sk-x",
        base_url="http://svc",
        s3_endpoint_url=s3_endpoint,
        s3_mode="presign",
    )
    store = Store(engine)
    options = RecognizeOptions(model="qwen-vl-ocr-latest")
    spec = BatchSpec(
        name="presigned",
        api="compatible",
        model=options.model,
        options=options.to_dict(),
        source_options={"s3_mode": "presign"},
    )
    store.create_batch(spec, [SourceRow(f"s3://{s3_bucket}/scan.png")])
    runtime = memory_runtime(settings, store)
    service = EchoingService()
    runtime._clients["compatible"] = QwenOCRClient(
        "sk-x", base_url="http://svc", transport=httpx.MockTransport(service)
    )
    processor = ItemProcessor(runtime, sleep=lambda seconds: None)
    [item_id] = store.pick_for_dispatch(1)
    yield processor, store, item_id, service
    runtime.close()


def _credentials(url: str) -> list[str]:
    query = parse_qsl(urlsplit(url).query)
    values = [value for name, value in query if name.lower() in CREDENTIAL_PARAMETERS]
    assert values, f"not a presigned URL: {url}"
    return values


def test_a_provider_error_echoing_a_presigned_url_stores_and_shows_no_signature(
    presigned_item: tuple[ItemProcessor, Store, int, EchoingService],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    processor, store, item_id, service = presigned_item
    caplog.handler.addFilter(RedactSecrets())
    with caplog.at_level(logging.DEBUG):
        assert processor.process(item_id) == Outcome.FAILED
    [url] = service.image_urls
    secrets = _credentials(url)

    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None and item.state == ItemState.FAILED
        stored = [item.last_error_message or ""]
        stored += [a.error_message or "" for a in session.scalars(select(Attempt))]
    assert "Download the media resource timed out" in stored[0]
    assert urlsplit(url).path in stored[0]  # the object is still named
    for text in stored:
        assert not any(secret in text for secret in secrets), text

    monkeypatch.setenv("QOCR_DATABASE_URL", database_url)
    get_settings.cache_clear()
    try:
        shown = [
            CliRunner().invoke(cli, ["show", str(item_id), *extra]) for extra in ([], ["--json"])
        ]
    finally:
        get_settings.cache_clear()
    for result in shown:
        assert result.exit_code == 0, result.output
        assert "Download the media resource" in result.output
        assert not any(secret in result.output for secret in secrets), result.output
    assert not any(secret in caplog.text for secret in secrets)
