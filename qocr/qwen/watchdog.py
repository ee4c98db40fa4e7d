"""Cutting a blocked read at a call's deadline: one shared timer thread per process.

A read blocked on a socket cannot be interrupted from the thread doing it, and a server
that sends a byte just before each read timeout keeps it blocked forever. At the deadline
the watchdog shuts the connection's socket down (``shutdown``, which wakes a thread blocked
in ``recv``; ``close`` does not), so the read returns at once and the call ends with its
deadline error. One thread serves every call of the process; it starts on first use and
sleeps while nothing is armed.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import Any


class Alarm:
    """One armed deadline; :meth:`cancel` disarms it, :attr:`fired` says whether it struck."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()
        self.fired = False

    def cancel(self) -> None:
        with self._lock:
            self._sock = None

    def _fire(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            if sock is None:
                return
            self.fired = True
        # socket.socket's own method: on a TLS socket it cuts the descriptor under the TLS
        # layer instead of tearing down the SSL object another thread is reading. An
        # OSError means it was closed already: nothing left to cut.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, at_monotonic: float) -> Alarm:
        alarm = Alarm(sock)
        with self._wakeup:
            heapq.heappush(self._heap, (at_monotonic, next(self._order), alarm))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="qocr-call-deadlines", daemon=True
                )
                self._thread.start()
            self._wakeup.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wakeup:
                due = self._pop_due()
                if not due:
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(wait)
                    continue
            for alarm in due:
                alarm._fire()

    def _pop_due(self) -> list[Alarm]:
        now = time.monotonic()
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        # Disarmed alarms wait in the heap until due; drop them in bulk when they pile up.
        if len(self._heap) > 1024:
            self._heap = [entry for entry in self._heap if entry[2]._sock is not None]
            heapq.heapify(self._heap)
        return due


_WATCHDOG = _Watchdog()


def _forget_in_child() -> None:
    # A forked child shares its parent's sockets: the parent's alarms must not cut them.
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_forget_in_child)


def arm(network_stream: Any, at_monotonic: float) -> Alarm | None:
    """Shut ``network_stream``'s socket at ``at_monotonic`` unless cancelled first.

    ``network_stream`` is httpcore's (``response.extensions["network_stream"]``); None when
    the transport has no socket (a mock transport), then only the per-chunk checks apply.
    """
    get_info = getattr(network_stream, "get_extra_info", None)
    sock = get_info("socket") if get_info is not None else None
    if not isinstance(sock, socket.socket):
        return None
    return _WATCHDOG.arm(sock, at_monotonic)
