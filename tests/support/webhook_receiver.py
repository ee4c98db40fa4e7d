"""A real HTTP server on loopback that receives qocr's completion webhooks, for tests.

It records every request (headers and body) and answers with the scripted statuses (200
once the script is used up). It can be stopped and started again on the same port (a
receiver down for a while), and can hold requests unanswered until the test releases them
(a sender killed mid-request); a held request whose sender is gone by then is recorded as
dropped, never as accepted.
"""

from __future__ import annotations

import http.server
import select
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

HOLD_LIMIT_SECONDS = 120.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int | None = None  # what was answered; None: the sender was gone (dropped)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def delivery_id(self) -> str:
        return self.headers.get("X-Qocr-Delivery", "")


@dataclass
class _Script:
    statuses: list[int] = field(default_factory=list)
    hold_next: int = 0  # how many of the next requests to hold
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)


class WebhookReceiver:
    """``with WebhookReceiver() as receiver:`` serves on ``receiver.url`` until the block ends."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script = _Script()
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/qocr?token=receiver-secret"

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.script.released.set()
        self.stop()

    def start(self) -> None:
        """Listen (again) on the same port."""
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                record = Received(dict(self.headers.items()), self.rfile.read(length))
                hold, status = receiver._next(record)
                if hold:
                    receiver.script.arrived.set()
                    receiver.script.released.wait(HOLD_LIMIT_SECONDS)
                    if _peer_gone(self.connection):
                        return  # recorded with status None: dropped
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    self.wfile.flush()
                except OSError:
                    return
                record.status = status

            def log_message(self, *_: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _next(self, record: Received) -> tuple[bool, int]:
        with self._lock:
            self.requests.append(record)
            hold = self.script.hold_next > 0
            if hold:
                self.script.hold_next -= 1
            status = self.script.statuses.pop(0) if self.script.statuses else 200
            return hold, status

    def accepted(self) -> list[Received]:
        with self._lock:
            return [record for record in self.requests if record.accepted]


def _peer_gone(connection: socket.socket) -> bool:
    """True when the sender closed its end (a killed process's socket is closed by its OS)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True
