"""``qocr results``: stream a batch's items and results as JSONL or CSV, to stdout, a file or S3.

JSONL lines are the Python API's records (``Client.results``); CSV rows come from
:meth:`Reports.iter_items` (with a first pass over the results for the columns). Either way
one page of item ids is read at a time, so a batch of any size is exported in constant
memory. A file or S3 object is written to a temporary file
first: a failed export leaves no half-written output behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import click

from qocr.api import Client, ItemResult
from qocr.cli.csv_export import kv_columns_of, write_csv
from qocr.cli.document_export import (
    document_records,
    write_document_csv,
    write_document_jsonl,
)
from qocr.cli.reading import api_secret, dump
from qocr.errors import QocrError
from qocr.models.document_reports import DocumentReports
from qocr.models.reports import Reports
from qocr.models.states import ItemState
from qocr.redact import redact_text
from qocr.s3 import S3Location, make_s3_client, parse_s3_uri
from qocr.settings import Settings, get_settings

CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}


class ExportError(QocrError):
    """The export could not be written or uploaded."""

    code = "export_failed"


def write_jsonl(results: Iterable[ItemResult], stream: IO[str]) -> int:
    count = 0
    for result in results:
        stream.write(dump(result.to_dict()) + "\n")
        count += 1
    return count


# -- the command -----------------------------------------------------------------------


@click.command()
@click.argument("batch_id", type=int)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="jsonl keeps everything; csv has one column per (flattened) result field.",
)
@click.option("--out", help="A file PATH or s3://bucket/key (default: standard output).")
@click.option(
    "--state",
    type=click.Choice([state.value for state in ItemState]),
    help="Only items in this state.",
)
@click.option(
    "--csv-raw",
    is_flag=True,
    help="With --format csv: write every cell verbatim. By default a cell that starts with "
    "=, +, -, @, tab or CR gets a leading ' so that a spreadsheet shows it as text instead of "
    "running it as a formula.",
)
@click.option(
    "--by",
    type=click.Choice(["item", "document"]),
    default="item",
    show_default=True,
    help="document: one record per source submitted, its pages in order and merged (text "
    "joined with form feeds, fields merged, tokens and cost summed); --state then filters "
    "documents by their merged state.",
)
@click.option("--json", "as_json", is_flag=True, help="With --out: print the summary as JSON.")
def results(
    batch_id: int,
    fmt: str,
    out: str | None,
    state: str | None,
    csv_raw: bool,
    by: str,
    as_json: bool,
) -> None:
    """Export the items of BATCH with their results (JSONL or CSV), streamed.

    With --by document: one record per source submitted, a PDF's or TIFF's pages merged.
    """
    if csv_raw and fmt != "csv":
        raise click.UsageError("--csv-raw applies to --format csv only")
    settings = get_settings()
    secret = api_secret(settings)
    only = ItemState(state) if state else None
    target = _s3_target(out) if out and out.startswith("s3://") else None
    if out and target is None and Path(out).is_dir():
        raise click.BadParameter(f"{out} is a directory; give a file name", param_hint="--out")
    with Client(settings) as client:
        results = client.results(batch_id, state=only)  # an unknown id fails here
        reports = Reports(client.engine)

        def export(stream: IO[str]) -> int:
            if by == "document":
                return _export_documents(client, batch_id, fmt, state, stream, secret, csv_raw)
            if fmt == "jsonl":
                return write_jsonl(results, stream)
            batch = reports.batch(batch_id)
            assert batch is not None
            # Without a schema, a first pass over the results finds the columns (lazily).
            kv_results = reports.iter_kv_results(batch_id, only)
            columns = kv_columns_of(batch.result_schema, kv_results)
            rows = reports.iter_items(batch_id, only)
            return write_csv(rows, stream, columns, secret, escape=not csv_raw)

        if out is None:
            _to_stdout(export)
            return
        with _staged(Path(out).parent if target is None else None) as (path, stream):
            count = export(stream)
            stream.close()
            if target is None:
                # mkstemp made the file private; the export gets the usual permissions.
                path.chmod(0o666 & ~_umask())
                os.replace(path, out)
            else:
                _upload(settings, path, target, fmt)
    summary = {"batch_id": batch_id, "format": fmt, "rows": count, "out": out}
    click.echo(dump(summary) if as_json else f"wrote {count} rows ({fmt}) to {out}")


def _export_documents(
    client: Client,
    batch_id: int,
    fmt: str,
    state: str | None,
    stream: IO[str],
    secret: str | None,
    csv_raw: bool,
) -> int:
    reports = Reports(client.engine)
    batch = reports.batch(batch_id)
    assert batch is not None
    documents = DocumentReports(client.engine)
    records = document_records(
        documents, batch_id, client.default_prices(), batch.model, secret, state
    )
    if fmt == "jsonl":
        return write_document_jsonl(records, stream)
    # The merged fields have the pages' columns: the same first pass finds them.
    columns = kv_columns_of(batch.result_schema, reports.iter_kv_results(batch_id))
    return write_document_csv(records, stream, columns, escape=not csv_raw)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _s3_target(uri: str) -> S3Location:
    try:
        location = parse_s3_uri(uri)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--out") from None
    if location.is_prefix:
        raise click.BadParameter(f"{uri} names a prefix, not an object key", param_hint="--out")
    return location


def _to_stdout(export: Callable[[IO[str]], int]) -> None:
    stream = sys.stdout
    try:
        export(stream)
        stream.flush()
    except BrokenPipeError:
        # The reader stopped early (`qocr results 1 | head`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None


@contextmanager
def _staged(folder: Path | None) -> Iterator[tuple[Path, IO[str]]]:
    """A temporary file (next to the destination, when local) removed unless moved away."""
    if folder is not None and not folder.is_dir():
        raise ExportError(f"cannot write the export: {folder} is not a directory")
    handle, name = tempfile.mkstemp(prefix=".qocr-results-", dir=folder)
    path = Path(name)
    try:
        with open(handle, "w", encoding="utf-8", newline="") as stream:
            yield path, stream
    finally:
        path.unlink(missing_ok=True)


def _upload(settings: Settings, path: Path, target: S3Location, fmt: str) -> None:
    """Upload with boto3's managed transfer (multipart above 8 MB)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    client = make_s3_client(settings.s3_endpoint_url)
    try:
        client.upload_file(
            str(path),
            target.bucket,
            target.key,
            ExtraArgs={"ContentType": CONTENT_TYPES[fmt]},
        )
    except (Boto3Error, BotoCoreError, ClientError) as exc:
        message = redact_text(str(exc), api_secret(settings))
        raise ExportError(f"upload to {target.uri()} failed: {message}") from None
