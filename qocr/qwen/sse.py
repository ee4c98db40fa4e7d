"""An incremental Server-Sent Events parser, sans I/O: feed bytes, get complete events.

Follows the WHATWG rules that matter here: lines end in CRLF, LF or CR (a CR at the end of
one chunk and an LF at the start of the next are one line end); ``field:value`` with one
optional space after the colon (native DashScope streams send none); repeated ``data`` lines
join with ``\\n``; a blank line dispatches; lines starting with ``:`` are comments, which we
keep because DashScope puts ``:HTTP_STATUS/200`` there. UTF-8 may split across chunks.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SSEEvent:
    """One dispatched event."""

    data: str
    event: str = "message"
    id: str | None = None
    comments: tuple[str, ...] = field(default=())


class SSEParser:
    """Turns a byte stream into :class:`SSEEvent` values; holds partial lines between feeds."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._pieces: list[str] = []
        self._pending_cr = False
        self._bom_checked = False
        self._reset()

    def _reset(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._comments: list[str] = []
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed. Raises UnicodeDecodeError."""
        text = self._decoder.decode(chunk)
        if not self._bom_checked and text:
            self._bom_checked = True
            text = text.removeprefix("\ufeff")
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across chunks
        self._pending_cr = text.endswith("\r")
        if "\n" not in text and "\r" not in text:
            # A line arriving in pieces: keep the pieces, join once the line ends (a long line
            # in small chunks would otherwise be copied over and over).
            self._pieces.append(text)
            return []
        buffer = "".join(self._pieces) + text
        events: list[SSEEvent] = []
        lines = buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._pieces = [lines.pop()]  # the unterminated tail waits for more bytes
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: dispatch a last complete event that lacked its blank line.

        A partial last line is dropped: the connection was cut in the middle of it.
        """
        self._decoder.decode(b"", final=True)
        if any(self._pieces) or not self._has_fields:
            self._reset()
            return []
        event = self._dispatch()
        return [event] if event is not None else []

    def _line(self, line: str) -> SSEEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            self._comments.append(line[1:].strip())
            self._has_fields = True
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self._has_fields = True
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        # "retry" and unknown fields are ignored: we do not reconnect.
        return None

    def _dispatch(self) -> SSEEvent | None:
        if not self._data and not self._event:
            self._reset()
            return None
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._id,
            comments=tuple(self._comments),
        )
        self._reset()
        return event
