"""Sans-IO framer: splits the module's byte stream into lines, prompts and payloads.

It owns no socket, no clock and no trio. Its owner (the protocol) says what comes next: a `>` prompt
(after `AT+QISEND=id,len`) or exactly N payload bytes (after `+QIRD: N` or a direct-push `recv` URC).
Everything else is a line, ended by CR or LF; empty lines are dropped. The modules end every payload
with CR LF: any other byte right after one means the payload ran longer than announced (`Overrun`).
"""

from __future__ import annotations

from dataclasses import dataclass

CR, LF = 0x0D, 0x0A
PROMPT = 0x3E  # '>'


@dataclass(frozen=True, slots=True)
class Line:
    """One line without its terminator, decoded 1:1 (latin-1) so garbage never raises."""

    text: str
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class Prompt:
    """The bare `>` that asks for QISEND data; it has no line terminator."""


@dataclass(frozen=True, slots=True)
class Payload:
    """Exactly the announced number of raw bytes; never split into lines."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Overrun:
    """The bytes right after a payload are not a line end: the payload was longer than its header
    said (line noise added bytes), so the payload just returned cannot be trusted."""


Event = Line | Prompt | Payload | Overrun


class Framer:
    """Bytes in, events out, framing decided by the caller through expect_*()."""

    def __init__(self, max_line: int = 4096) -> None:
        self._buf = bytearray()
        self._max_line = max_line
        self._payload_left: int | None = None
        self._prompt = False
        self._skip_lf = False
        self._check_end = False  # a payload was just taken: a line end must follow it
        self.truncations = 0
        self.overruns = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def expect_payload(self, size: int) -> None:
        """The next `size` bytes (after the current line's terminator) are payload."""
        self._payload_left = size if size > 0 else None

    def expect_prompt(self, on: bool = True) -> None:
        self._prompt = on

    @property
    def awaiting_end(self) -> bool:
        """A payload was just taken and the byte after it (the line end) has not arrived yet."""
        return self._check_end

    @property
    def payload_missing(self) -> int:
        """Bytes of the payload being framed that have not arrived yet (0: none expected)."""
        if self._payload_left is None:
            return 0
        return max(0, self._payload_left - len(self._buf))

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        """Forget everything buffered (module reset, port reopened)."""
        self._buf.clear()
        self._payload_left = None
        self._prompt = False
        self._skip_lf = False
        self._check_end = False

    def next_event(self) -> Event | None:
        """Return the next complete event, or None when more bytes are needed."""
        while True:
            event = self._next()
            if not (isinstance(event, Line) and not event.text):
                return event

    def _next(self) -> Event | None:
        buf = self._buf
        if self._check_end and buf:
            self._check_end = False
            if buf[0] not in (CR, LF):
                self.overruns += 1
                return Overrun()
        if self._skip_lf and buf:
            if buf[0] == LF:
                del buf[0]
            self._skip_lf = False
        if self._payload_left is not None:
            return self._take_payload()
        while buf and buf[0] in (CR, LF):
            del buf[0]
        if not buf:
            return None
        if self._prompt and buf[0] == PROMPT:
            self._prompt = False
            del buf[:2 if len(buf) > 1 and buf[1] == 0x20 else 1]
            return Prompt()
        return self._take_line()

    def _take_payload(self) -> Payload | None:
        size = self._payload_left
        assert size is not None
        if len(self._buf) < size:
            return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        self._payload_left = None
        self._check_end = True
        return Payload(data)

    def _take_line(self) -> Line | None:
        buf = self._buf
        cr = buf.find(b"\r", 0, self._max_line + 1)
        lf = buf.find(b"\n", 0, self._max_line + 1)
        ends = [i for i in (cr, lf) if i >= 0]
        if not ends:
            if len(buf) <= self._max_line:
                return None
            self.truncations += 1
            text = buf[: self._max_line].decode("latin-1")
            del buf[: self._max_line]
            return Line(text, truncated=True)
        end = min(ends)
        text = buf[:end].decode("latin-1").strip(" ")
        if buf[end] == CR:
            if end + 1 < len(buf):
                del buf[: end + (2 if buf[end + 1] == LF else 1)]
            else:
                del buf[: end + 1]
                self._skip_lf = True
        else:
            del buf[: end + 1]
        return Line(text)
