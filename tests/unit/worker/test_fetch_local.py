"""Local sources in the worker: a path that is (or became after submit) a FIFO, a device, a
socket or a directory is refused at once with a code, never read (issue 13, point 7)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from qocr.worker.fetch import FetchError, ImageFetcher

BLOCKING_SECONDS = 5.0


def no_s3() -> NoReturn:
    raise AssertionError("no S3 client for local files")


@pytest.fixture
def fetcher() -> ImageFetcher:
    return ImageFetcher(no_s3)


def fetch_within(fetcher: ImageFetcher, path: Path, release: Callable[[], None]) -> object:
    """What ``fetch`` returns or raises, failing the test if it blocks; ``release`` unblocks
    a stuck thread so that the test run itself does not hang."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fetcher.fetch(str(path)))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BLOCKING_SECONDS)
    if thread.is_alive():
        release()
        thread.join(BLOCKING_SECONDS)
        pytest.fail(f"fetch of {path} blocked for {BLOCKING_SECONDS} s")
    return outcome[0]


def _open_writer(path: Path) -> Callable[[], None]:
    def release() -> None:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)

    return release


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "scan.png"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    yield path
    server.close()


def test_a_fifo_is_refused_without_blocking(fetcher: ImageFetcher, tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    os.mkfifo(path)
    outcome = fetch_within(fetcher, path, _open_writer(path))
    assert isinstance(outcome, FetchError)
    assert outcome.code == "source_not_regular_file"
    assert "FIFO" in outcome.message and str(path) in outcome.message
    assert not outcome.retryable


def test_a_socket_is_refused(fetcher: ImageFetcher, unix_socket: Path) -> None:
    outcome = fetch_within(fetcher, unix_socket, lambda: None)
    assert isinstance(outcome, FetchError)
    assert (outcome.code, "socket" in outcome.message) == ("source_not_regular_file", True)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(fetcher: ImageFetcher, device: str) -> None:
    outcome = fetch_within(fetcher, Path(device), lambda: None)
    assert isinstance(outcome, FetchError)
    assert outcome.code == "source_not_regular_file"
    assert "device" in outcome.message


def test_a_directory_is_refused(fetcher: ImageFetcher, tmp_path: Path) -> None:
    outcome = fetch_within(fetcher, tmp_path, lambda: None)
    assert isinstance(outcome, FetchError)
    assert (outcome.code, "directory" in outcome.message) == ("source_not_regular_file", True)


def test_a_symlink_to_a_fifo_is_refused(fetcher: ImageFetcher, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "scan.png"
    link.symlink_to(fifo)
    outcome = fetch_within(fetcher, link, _open_writer(fifo))
    assert isinstance(outcome, FetchError) and outcome.code == "source_not_regular_file"


def test_a_regular_file_is_read(fetcher: ImageFetcher, tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 100)
    assert fetcher.fetch(str(path)) == path.read_bytes()


@pytest.mark.parametrize(
    ("name", "code"),
    [("missing.png", "source_not_found"), ("x" * 5000 + ".png", "source_unreadable")],
)
def test_other_unreadable_paths_fail_with_a_code(
    fetcher: ImageFetcher, tmp_path: Path, name: str, code: str
) -> None:
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(str(tmp_path / name))
    assert caught.value.code == code
    assert not caught.value.retryable
    assert len(caught.value.message) < 600  # a 5,000-character name is not repeated whole
