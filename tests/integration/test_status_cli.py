"""`qocr status`, `qocr results` and `qocr show` on batches built by `qocr run`.

SQLite and PostgreSQL, the emulator behind the pipeline; every printed number is checked
against the rows (counts, token sums, cost arithmetic, error codes, exported fields).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qocr.cli.csv_export import BASE_COLUMNS, flatten, header_of, kv_columns_of
from qocr.models import ItemState
from qocr.models.db import make_engine
from qocr.models.reports import Reports
from qocr.qwen.catalog import price
from qocr.s3 import make_s3_client
from tests.support.cli_batches import (
    API_KEY,
    SCHEMA,
    Built,
    invoke,
    item_rows,
    pipeline_batches,
)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    with pipeline_batches(request.param, tmp_path_factory.mktemp("status-cli")) as batches:
        yield batches


@pytest.fixture
def reports(built: Built) -> Iterator[Reports]:
    engine = make_engine(built.url)
    yield Reports(engine)
    engine.dispose()


def status_json(*args: str) -> dict[str, Any]:
    result = invoke("status", *args, "--json")
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output)
    return document


def expected_cost(reports: Reports, batch_id: int, price_in: float, price_out: float) -> float:
    results = [r for _, r in item_rows(reports, batch_id) if r is not None]
    return sum(r.input_tokens * price_in + r.output_tokens * price_out for r in results) / 1e6


# -- status ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["kie", "mixed", "cut"])
def test_status_json_matches_the_rows(built: Built, reports: Reports, which: str) -> None:
    batch_id = getattr(built, which)
    rows = item_rows(reports, batch_id)
    results = [r for _, r in rows if r is not None]

    doc = status_json(str(batch_id))

    assert (doc["id"], doc["name"], doc["state"], doc["total"]) == (
        batch_id,
        which,
        "completed",
        len(rows),
    )
    counts = Counter(item.state.value for item, _ in rows)
    assert doc["counts"] == {state.value: counts.get(state.value, 0) for state in ItemState}
    assert doc["done"] == len(rows) and doc["progress"] == 1.0
    assert doc["throughput"] is None and doc["eta_seconds"] is None  # not running
    assert doc["usage"] == {
        "input_tokens": sum(r.input_tokens for r in results),
        "output_tokens": sum(r.output_tokens for r in results),
        "image_tokens": sum(r.image_tokens for r in results),
        "total_tokens": sum(r.total_tokens for r in results),
    }
    assert doc["finish_reasons"] == Counter(r.finish_reason for r in results)
    assert doc["truncated"] == sum(1 for r in results if r.finish_reason == "length")
    failed = [i for i, _ in rows if i.state in (ItemState.FAILED, ItemState.CANCELLED)]
    assert doc["errors"] == Counter(i.last_error_code for i in failed)
    # Catalog prices of the configured region (intl by default), per model of the results.
    price_in, price_out = price("qwen-vl-ocr-latest", "intl")
    cost = doc["cost"]
    assert cost["currency"] == "USD" and cost["region"] == "intl"
    assert cost["usd"] == pytest.approx(
        expected_cost(reports, batch_id, price_in, price_out), abs=1e-6
    )
    [model] = cost["models"]
    assert model["model"] == "qwen-vl-ocr-latest" and model["price_source"] == "catalog"
    assert (model["usd_per_million_input"], model["usd_per_million_output"]) == (
        price_in,
        price_out,
    )
    assert model["input_tokens"] == doc["usage"]["input_tokens"]


def test_status_reports_the_errors_and_the_cut_answers(built: Built) -> None:
    assert status_json(str(built.mixed))["errors"] == {
        "image_empty": 1,
        "image_unsupported_format": 1,
    }
    cut = status_json(str(built.cut))
    assert cut["finish_reasons"] == {"length": 1} and cut["truncated"] == 1


def test_status_prices_can_be_overridden(built: Built, reports: Reports) -> None:
    batch_id = str(built.kie)
    by_option = status_json(batch_id, "--price-in", "2", "--price-out", "10")["cost"]
    assert by_option["usd"] == pytest.approx(expected_cost(reports, built.kie, 2, 10), abs=1e-6)
    assert by_option["models"][0]["price_source"] == "option"

    prices = built.tmp / "prices.toml"
    prices.write_text('[prices.us]\n"qwen-vl-ocr-latest" = { input = 1.5, output = 4 }\n')
    by_file = status_json(batch_id, "--region", "us", "--prices", str(prices))["cost"]
    assert by_file["region"] == "us" and by_file["models"][0]["price_source"] == str(prices)
    assert by_file["usd"] == pytest.approx(expected_cost(reports, built.kie, 1.5, 4), abs=1e-6)

    # Only the input price given: the output price still comes from the file.
    mixed = status_json(batch_id, "--region", "us", "--prices", str(prices), "--price-in", "0")
    assert mixed["cost"]["usd"] == pytest.approx(expected_cost(reports, built.kie, 0, 4), abs=1e-6)

    # The config file (qocr.toml in the working directory) is read when present.
    config = built.tmp / "qocr.toml"
    config.write_text('[prices.intl]\n"*" = { input = 3, output = 5 }\n')
    try:
        by_config = status_json(batch_id)["cost"]
    finally:
        config.unlink()
    assert by_config["models"][0]["price_source"] == "qocr.toml"
    assert by_config["usd"] == pytest.approx(expected_cost(reports, built.kie, 3, 5), abs=1e-6)


def test_a_bad_prices_file_is_a_clear_error(built: Built) -> None:
    bad = built.tmp / "bad-prices.toml"
    bad.write_text('[prices.mars]\n"m" = { input = 1, output = 2 }\n')
    result = invoke("status", str(built.kie), "--prices", str(bad))
    assert result.exit_code == 2
    assert f"Error: {bad}: unknown region(s) mars in [prices]" in result.output
    missing = invoke("status", str(built.kie), "--prices", str(built.tmp / "nope.toml"))
    assert missing.exit_code == 2 and "nope.toml not found" in missing.output


def test_status_lists_recent_batches(built: Built, reports: Reports) -> None:
    doc = status_json()
    ids = [line["id"] for line in doc["batches"]]
    assert ids == [built.cut, built.mixed, built.kie]
    mixed = next(line for line in doc["batches"] if line["id"] == built.mixed)
    assert mixed["done"] == mixed["total"] == 5 and mixed["failed"] == 2
    assert mixed["counts"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 2,
        "cancelled": 0,
        "expanded": 0,
    }
    assert [line["id"] for line in status_json("--limit", "1")["batches"]] == [built.cut]
    assert status_json("--state", "running")["batches"] == []

    table = invoke("status")
    assert table.exit_code == 0
    header, *lines = table.output.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "DONE/TOTAL", "FAILED", "AGE"]
    assert lines[1].split()[:5] == [str(built.mixed), "mixed", "completed", "5/5", "2"]


def test_status_human_output_shows_the_same_numbers(built: Built) -> None:
    doc = status_json(str(built.mixed))
    result = invoke("status", str(built.mixed))
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    assert "5/5 finished (100.0%)" in lines["Progress"]
    assert f"input {doc['usage']['input_tokens']:,}" in lines["Tokens"]
    assert "image_empty 1" in lines["Errors"] and "image_unsupported_format 1" in lines["Errors"]
    assert f"${doc['cost']['usd']:.6f}" in lines["Cost"]
    cut = invoke("status", str(built.cut)).output
    assert "warning: 1 answer(s) cut at max_tokens" in cut
    assert API_KEY not in result.output + cut


# -- results ---------------------------------------------------------------------------


def export(*args: str) -> str:
    result = invoke("results", *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_jsonl_keeps_everything(built: Built, reports: Reports) -> None:
    lines = [json.loads(line) for line in export(str(built.mixed)).splitlines()]
    rows = item_rows(reports, built.mixed)
    assert [line["item_id"] for line in lines] == [item.id for item, _ in rows]
    for line, (item, result) in zip(lines, rows, strict=True):
        assert line["source"] == item.source and line["state"] == item.state.value
        assert line["attempts"] == item.attempts
        assert line["error_code"] == item.last_error_code
        assert line["error_message"] == item.last_error_message
        if result is None:
            assert line["text"] is None and line["usage"] is None
            continue
        assert line["text"] == result.text and line["finish_reason"] == result.finish_reason
        assert line["request_id"] == result.request_id and line["model"] == result.model
        assert line["kv_result"] == result.kv_result and line["words_info"] == result.words_info
        assert line["usage"] == {
            "input_tokens": result.input_tokens,
            "output_tokens": result.output_tokens,
            "image_tokens": result.image_tokens,
            "total_tokens": result.total_tokens,
        }
    failed = [line for line in lines if line["state"] == "failed"]
    assert sorted(line["error_code"] for line in failed) == [
        "image_empty",
        "image_unsupported_format",
    ]


def test_state_filter(built: Built) -> None:
    exported = export(str(built.mixed), "--state", "failed").splitlines()
    failed = [json.loads(line) for line in exported]
    assert sorted(Path(line["source"]).name for line in failed) == ["empty.png", "notes.png"]
    rows = list(csv.DictReader(io.StringIO(export(str(built.mixed), "--format", "csv"))))
    succeeded = export(str(built.mixed), "--format", "csv", "--state", "succeeded")
    assert [r["item_id"] for r in csv.DictReader(io.StringIO(succeeded))] == [
        r["item_id"] for r in rows if r["state"] == "succeeded"
    ]
    assert export(str(built.mixed), "--state", "cancelled") == ""


def test_kie_csv_has_one_column_per_flattened_schema_field(built: Built, reports: Reports) -> None:
    reader = csv.DictReader(io.StringIO(export(str(built.kie), "--format", "csv")))
    batch = reports.batch(built.kie)
    assert batch is not None and batch.result_schema == SCHEMA
    # In the stored schema's key order (JSONB on PostgreSQL keeps its own order).
    schema_columns = list(flatten(batch.result_schema))
    assert sorted(schema_columns) == [
        "date",
        "invoice_number",
        "line_items",
        "seller.address.city",
        "seller.name",
        "total",
    ]
    assert reader.fieldnames == [*BASE_COLUMNS, *schema_columns, "text"]
    rows = list(reader)
    expected = [(item, result) for item, result in item_rows(reports, built.kie)]
    assert len(rows) == len(expected) == 3
    for row, (item, result) in zip(rows, expected, strict=True):
        assert result is not None and result.kv_result is not None
        flat = flatten(result.kv_result)
        assert row["item_id"] == str(item.id) and row["source"] == item.source
        assert row["seller.name"] == flat["seller.name"]
        assert row["seller.address.city"] == flat["seller.address.city"]
        assert row["total"] == flat["total"] and row["date"] == flat["date"]
        assert json.loads(row["line_items"]) == result.kv_result["line_items"]
        assert row["input_tokens"] == str(result.input_tokens)
        assert row["text"] == result.text


def test_csv_without_a_schema_takes_its_columns_from_the_results(built: Built) -> None:
    reader = csv.DictReader(io.StringIO(export(str(built.mixed), "--format", "csv")))
    assert reader.fieldnames == [*BASE_COLUMNS, "text"]  # plain OCR: no kv_result at all
    rows = list(reader)
    assert {r["state"] for r in rows} == {"succeeded", "failed"}
    empty = next(r for r in rows if r["source"].endswith("empty.png"))
    assert (empty["error_code"], empty["finish_reason"], empty["text"]) == ("image_empty", "", "")


def test_results_to_a_file(built: Built) -> None:
    out = built.tmp / "export" / "kie.csv"
    out.parent.mkdir(exist_ok=True)
    result = invoke("results", str(built.kie), "--format", "csv", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "batch_id": built.kie,
        "format": "csv",
        "rows": 3,
        "out": str(out),
    }
    assert out.read_text() == export(str(built.kie), "--format", "csv")
    assert [p.name for p in out.parent.iterdir()] == ["kie.csv"]  # no temporary file left
    folder = invoke("results", str(built.kie), "--out", str(out.parent))
    assert folder.exit_code == 2 and "is a directory; give a file name" in folder.output


def test_results_to_s3(
    built: Built, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QOCR_S3_ENDPOINT_URL", s3_endpoint)
    for fmt in ("jsonl", "csv"):
        key = f"exports/batch-{built.mixed}.{fmt}"
        result = invoke(
            "results", str(built.mixed), "--format", fmt, "--out", f"s3://{s3_bucket}/{key}"
        )
        assert result.exit_code == 0, result.output
        assert f"wrote 5 rows ({fmt}) to s3://{s3_bucket}/{key}" in result.output
        body = make_s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=key)
        assert body["Body"].read().decode() == export(str(built.mixed), "--format", fmt)
        assert body["ContentType"].startswith("text/csv" if fmt == "csv" else "application/")


def test_s3_errors_are_clear_and_leave_nothing(
    built: Built, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QOCR_S3_ENDPOINT_URL", s3_endpoint)
    missing = invoke("results", str(built.kie), "--out", "s3://no-such-bucket-qocr/x.jsonl")
    assert missing.exit_code == 2
    assert "Error: upload to s3://no-such-bucket-qocr/x.jsonl failed" in missing.output
    assert "NoSuchBucket" in missing.output
    prefix = invoke("results", str(built.kie), "--out", "s3://bucket/folder/")
    assert prefix.exit_code == 2 and "names a prefix" in prefix.output


# -- show ------------------------------------------------------------------------------


def test_show_gives_the_result_and_every_attempt(built: Built, reports: Reports) -> None:
    item, result = max(item_rows(reports, built.mixed), key=lambda pair: pair[0].attempts)
    detail = reports.item(item.id)
    assert detail is not None and result is not None
    doc = json.loads(invoke("show", str(item.id), "--json").output)
    assert doc["item_id"] == item.id and doc["batch_id"] == built.mixed
    assert doc["batch_name"] == "mixed" and doc["text"] == result.text
    assert doc["attempts"] == item.attempts == len(doc["history"]) > 1
    assert [h["number"] for h in doc["history"]] == list(range(1, item.attempts + 1))
    assert [h["outcome"] for h in doc["history"]] == [a.outcome.value for a in detail.history]
    assert [h["error_code"] for h in doc["history"]] == [a.error_code for a in detail.history]
    assert doc["history"][-1]["outcome"] == "succeeded"
    assert doc["history"][-1]["request_id"] == result.request_id

    human = invoke("show", str(item.id)).output
    assert f"item {item.id}  batch {built.mixed} (mixed)" in human
    assert human.count("\n  #") == item.attempts


def test_show_a_failed_item(built: Built, reports: Reports) -> None:
    item = next(i for i, _ in item_rows(reports, built.mixed) if i.source == str(built.empty_png))
    doc = json.loads(invoke("show", str(item.id), "--json").output)
    assert (doc["state"], doc["error_code"]) == ("failed", "image_empty")
    assert doc["text"] is None and doc["usage"] is None and doc["history"] == []
    assert "error       image_empty: image is empty" in invoke("show", str(item.id)).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status", "424242"], "no batch with id 424242"),
        (["status", "424242", "--json"], "no batch with id 424242"),
        (["status", "424242", "--watch"], "no batch with id 424242"),
        (["results", "424242"], "no batch with id 424242"),
        (["results", "424242", "--format", "csv", "--out", "x.csv"], "no batch with id 424242"),
        (["show", "424242", "--json"], "no item with id 424242"),
        (["retry", "424242"], "no batch with id 424242"),
        (["cancel", "424242", "--json"], "no batch with id 424242"),
    ],
)
def test_bad_ids_exit_non_zero_with_a_clear_message(
    built: Built, args: list[str], message: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 1
    assert f"Error: {message}" in result.output
    assert not (built.tmp / "x.csv").exists()


def test_watch_needs_a_batch(built: Built) -> None:
    result = invoke("status", "--watch")
    assert result.exit_code == 2 and "--watch needs a BATCH id" in result.output


# -- CSV shape, without a database -----------------------------------------------------


def test_flatten_dots_nested_keys_and_keeps_lists_whole() -> None:
    assert flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None, "f": {}}) == {
        "a.b.c": 1,
        "a.d": [1, 2],
        "e": None,
        "f": {},
    }
    assert list(flatten(SCHEMA)) == [
        "invoice_number",
        "date",
        "seller.name",
        "seller.address.city",
        "total",
        "line_items",
    ]


def test_columns_come_from_the_schema_else_from_every_result() -> None:
    assert kv_columns_of({"x": {"y": ""}}, iter([{"z": 1}])) == ["x.y"]
    seen = [{"a": 1}, None, {"b": {"c": 2}, "a": 3}]
    assert kv_columns_of(None, iter(seen)) == ["a", "b.c"]
    assert kv_columns_of(None, iter([{"a": 1}, ["a list"]])) == ["a", "kv_result"]
    assert header_of(["state", "x"])[-3:] == ["kv.state", "x", "text"]
