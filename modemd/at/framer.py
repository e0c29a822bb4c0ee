"""Sans-IO framer: splits the module's byte stream into lines, prompts and payloads.

It owns no socket, no clock and no trio. Its owner (the protocol) says what comes next: a `>` prompt
(after `AT+QISEND=id,len`) or exactly N payload bytes (after `+QIRD: N` or a direct-push `recv` URC).
Everything else is a line; empty lines (and lines of spaces, like the one a prompt's trailing space
leaves) are dropped. The modules end every payload with CR LF: any other byte right after one means
the payload ran longer than announced (`Overrun`).

Line discipline (V.250: S3 S4, i.e. CR LF). A line is complete at its LF, never at its CR alone, so a
final result code is only reported once the module has finished printing it:

* ``text LF``, ``text CR LF`` and ``text CR CR LF`` (an echo carries the host's CR) end a line;
* ``text CR x``, where x is any other byte, is a CR-only line end: the line is complete at once;
* ``text CR`` (or ``text CR CR``) as the last bytes buffered is *pending* (`line_pending`): the next
  byte decides. If nothing comes for a few character times, the owner calls `end_pending_line()`: a
  module that ends its lines with CR only is recognised by the absence of the LF, never by a guess.
  An LF that arrives after all is dropped. After two CR-only line ends in a row (and no CR LF since)
  the module is taken to be CR-only (`cr_only`): a CR ends a line at once, until a CR LF is seen.
"""

from __future__ import annotations

from dataclasses import dataclass

CR, LF = 0x0D, 0x0A
PROMPT = 0x3E  # '>'
SPACE = 0x20
LINE_END = (CR, LF)
#: consecutive CR-only line ends (no CR LF between) after which the module is taken to be CR-only
CR_ONLY_AFTER = 2


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
        self._skip_lf = False      # a line was ended at its CR: an LF right after belongs to it
        self._skip_space = False   # a `>` prompt was the last byte: a space right after is its own
        self._check_end = False    # a payload was just taken: a line end must follow it
        self._pending = False      # the buffer ends in a line whose CR waits for its next byte
        self._end_pending = False  # the owner saw silence after that CR: it ends the line
        self._cr_only_run = 0      # CR-only line ends since the last CR LF
        self.truncations = 0
        self.overruns = 0
        self.cr_only_ends = 0      # lines ended by a CR without LF (stats)

    def feed(self, data: bytes) -> None:
        if data:
            self._buf += data
            self._pending = self._end_pending = False  # the new bytes decide

    def expect_payload(self, size: int) -> None:
        """The next `size` bytes (after the current line's terminator) are payload."""
        self._payload_left = size if size > 0 else None

    def expect_prompt(self, on: bool = True) -> None:
        self._prompt = on

    @property
    def awaiting_end(self) -> bool:
        """A payload was just taken and the byte after it was not seen to be a line end: it has
        not arrived yet, or next_event() reports the Overrun. False once the payload's end is
        known to be sane."""
        return self._check_end

    @property
    def line_pending(self) -> bool:
        """A line ended by CR is buffered and the byte after the CR has not arrived: it is either
        an LF still on its way (the normal case) or nothing (a CR-only module). Valid after
        next_event() returned None."""
        return self._pending

    @property
    def cr_only(self) -> bool:
        """The module was seen ending lines with CR only (and no CR LF since)."""
        return self._cr_only_run >= CR_ONLY_AFTER

    def end_pending_line(self) -> bool:
        """No byte came after the pending line's CR for a few character times: the CR ended it
        (next_event() returns it). False if no line is pending."""
        if not self._pending:
            return False
        self._end_pending = True
        return True

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
        self._skip_lf = self._skip_space = False
        self._check_end = False
        self._pending = self._end_pending = False
        self._cr_only_run = 0

    def next_event(self) -> Event | None:
        """Return the next complete event, or None when more bytes are needed. One pass per
        event over the buffer's head (this runs several times per downloaded frame)."""
        self._pending = False
        buf = self._buf
        while buf:
            if self._check_end:
                self._check_end = False
                if buf[0] not in LINE_END:
                    self.overruns += 1
                    return Overrun()
            if self._skip_lf:
                if buf[0] == LF:
                    del buf[0]
                    self._cr_only_run = 0  # the LF was only late: not a CR-only module after all
                self._skip_lf = False
                continue  # the buffer may be empty now
            if self._skip_space:
                if buf[0] == SPACE:
                    del buf[0]
                self._skip_space = False
                continue
            if self._payload_left is not None:
                return self._take_payload()
            if buf[0] in LINE_END:  # the rest of a line end, or empty lines
                while buf and buf[0] in LINE_END:
                    del buf[0]
                continue
            if self._prompt and buf[0] == PROMPT:
                self._prompt = False
                if len(buf) == 1:
                    self._skip_space = True  # its trailing space may still come
                del buf[:2 if len(buf) > 1 and buf[1] == SPACE else 1]
                return Prompt()
            line = self._take_line()
            if line is None or line.text:
                return line
            # a line of spaces (a prompt's space left over): dropped, go on
        return None

    def _take_payload(self) -> Payload | None:
        size = self._payload_left
        assert size is not None
        buf = self._buf
        if len(buf) < size:
            return None
        data = bytes(buf[:size])
        # the byte after it is usually read with it: a line end is checked here and now, anything
        # else (or nothing yet) by the next call (an Overrun, once it is there)
        self._check_end = len(buf) == size or buf[size] not in LINE_END
        del buf[:size]
        self._payload_left = None
        return Payload(data)

    def _take_line(self) -> Line | None:
        buf = self._buf
        window = self._max_line + 1
        cr = buf.find(b"\r", 0, window)
        lf = buf.find(b"\n", 0, window)
        if cr < 0 and lf < 0:
            if len(buf) <= self._max_line:
                return None
            self.truncations += 1
            text = buf[: self._max_line].decode("latin-1")
            del buf[: self._max_line]
            return Line(text, truncated=True)
        if cr < 0 or 0 <= lf < cr:  # text LF
            text = buf[:lf].decode("latin-1").strip(" ")
            del buf[: lf + 1]
            return Line(text)
        if lf == cr + 1:  # CR LF, the usual end (the rest of _cr_end's first case)
            self._cr_only_run = 0
            size = 2
        else:
            size = self._cr_end(cr)
            if size is None:
                self._pending = True
                return None
        text = buf[:cr].decode("latin-1").strip(" ")
        del buf[: cr + size]
        return Line(text)

    def _cr_end(self, cr: int) -> int | None:
        """How many bytes end the line whose first CR is at `cr` (None: not known yet)."""
        buf = self._buf
        n = len(buf)
        if cr + 1 < n and buf[cr + 1] == LF:
            self._cr_only_run = 0
            return 2  # CR LF
        if self.cr_only:
            # a known CR-only module: its CR ends the line, at once (an LF right after it, even
            # in a later read, still belongs to it and shows the module is not CR-only after all)
            if cr + 1 >= n:
                self._skip_lf = True
            self.cr_only_ends += 1
            return 1
        if cr + 2 < n and buf[cr + 1] == CR and buf[cr + 2] == LF:
            self._cr_only_run = 0
            return 3  # CR CR LF: an echo, with the host's CR
        if cr + 1 >= n or (cr + 2 >= n and buf[cr + 1] == CR):
            # the last byte(s) buffered: the next one decides, unless the owner saw silence
            if not self._end_pending:
                return None
            self._end_pending = False
            self._skip_lf = True  # an LF arriving after all still belongs to this line
            size = n - cr
        else:
            size = 1  # CR then another byte (a second CR, if any, is an empty line)
        self.cr_only_ends += 1
        self._cr_only_run += 1
        return size
