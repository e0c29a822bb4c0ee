"""Sans-IO AT protocol state machine (in the manner of h11).

`send(command)` returns the bytes to write; `receive(data)` takes what the port read; `next_event()`
hands out `Urc`, `PromptWanted`, `Done` and `Unknown` events. The command in flight decides how the
lines that arrive are classified and how the next bytes are framed:

1. a line starting with the command's own prefix belongs to it (and may announce a payload);
2. else a line with a URC prefix is a URC (at every line boundary, also mid-response);
3. else an echo of the command is dropped (also a garbled one, "TATE0"), a final result code ends
   the command;
4. else, for commands with bare information lines (ATI, AT+CGMM), it belongs to the command, unless
   it is a `+NAME:` line of another command than the one sent (a real module's chatter, `+QGPSURC:`,
   arriving during ATI is not part of the identity);
5. anything else is an unknown line: counted and reported, never glued into a result.

Lost-command probes (the channel's `AT+CMEE?`, a `Command` with `probe=True`) are attributed, not
timed: the module answers commands in order, and only a probe's answer carries its information line
(`+CMEE: <n>`; no other command of the daemon asks for it). So:

6. while a probe waits for its information line, a final result that may be a late answer (a command
   or a probe was abandoned since the last attributed final: `stale_possible`) is that late final:
   dropped and counted (`stale_finals`), the probe keeps waiting;
7. a probe abandoned before its information line is a debt (`probe_debt`): its answer may still come.
   While a debt is open, a line with the probe's prefix is that abandoned probe's (the module answers
   in order, so it comes before any later command's): it and the final that follows it are dropped
   and counted (`late_probe_answers`), never given to the command in flight;
8. the debt expires at the next attributed final (a probe's own answer after its information line,
   or any other command's final: an abandoned probe that was answered at all was answered before
   it), and at `reset()` (a module reset, a new channel). A probe that never reached a hung module
   thus costs at most one later `AT+CMEE?` its answer (lost, so probed: never a wrong answer).
9. a restart (`restarted()`, RDY) settles everything asked before it, except the probe in flight:
   the module may have read it just after booting and answer it after its RDY. Its answer is
   then dropped with its final when it comes while a command other than a probe is in flight,
   and taken by a probe in flight (both answers say "alive"; the one left over is dropped
   later). This debt expires at the next final of a command other than a probe, so a probe the
   booting module never read costs nothing, unlike rule 7's. A plain command in flight at the
   restart may be answered late just the same, but its final looks like any other: the caller
   (the channel) then writes a probe before the next command, and rule 6 drops that final
   (`stale_possible` is set at the restart).

A line, and so a final result code, is complete at its LF (framer.py): while the CR of the last line
buffered waits for its next byte, `awaiting_line_end` is true, and the caller that has heard nothing
more for a few character times calls `end_pending_line()` (a module that ends lines with CR only).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from .framer import Framer, Line, Overrun, Payload, Prompt
from .urc import is_urc, recv_header

OK_FINALS = frozenset({"OK"})
ERROR_FINALS = frozenset({"ERROR", "NO CARRIER"})
ERROR_PREFIXES = ("+CME ERROR:", "+CMS ERROR:")
SEND_FINALS = frozenset({"SEND OK", "SEND FAIL"})
#: the longest payload a line may announce. The modules send at most 1500 bytes per QIRD answer or
#: direct-push URC; a larger length is line noise (a flipped digit), and waiting for it would swallow
#: every following line and buffer without bound. 4096 leaves room for families not profiled yet.
MAX_PAYLOAD = 4096


@dataclass(frozen=True, slots=True)
class Command:
    """One AT command line and how its answer is framed.

    prefix:      information lines that belong to this command ("+QIRD:").
    bare_lines:  lines with no prefix belong to it too (ATI, AT+CGMM, AT+GSN).
    payload:     the first field of a prefix line is the length of a raw payload that follows it.
    data:        bytes written after the `>` prompt (fixed-length QISEND).
    finals:      result codes that end the command successfully.
    after_ok:    two-stage commands (BC25 QISEND/QICLOSE): after OK, wait for one of these.
    timeout:     seconds the channel waits for the final result (the outer bound).
    expect:      seconds after which an unanswered command is suspected lost: the channel makes
                 sure the line is quiet and probes (answered: CommandLost; silent: the module is
                 hung). None: only `timeout` applies.
    probe:       the channel's lost-command probe: answered only by an information line with
                 `prefix` and its final (module docstring, rules 6-8).
    """

    text: str
    prefix: str | None = None
    bare_lines: bool = False
    payload: bool = False
    data: bytes | None = None
    finals: frozenset[str] = OK_FINALS
    after_ok: frozenset[str] | None = None
    timeout: float = 60.0
    expect: float | None = None
    probe: bool = False

    @property
    def name(self) -> str:
        """The command without arguments, for metrics and logs ("AT+QIRD")."""
        for sep in ("=", "?"):
            if sep in self.text:
                return self.text.split(sep, 1)[0]
        return self.text


@dataclass(slots=True)
class Response:
    command: Command
    final: str = ""
    lines: list[str] = field(default_factory=list)
    payload: bytes | None = None
    corrupt: bool = False  # a payload ran past its announced length: its bytes are not trusted

    @property
    def error(self) -> bool:
        return self.corrupt or self.final in ERROR_FINALS or self.final.startswith(ERROR_PREFIXES)

    @property
    def error_code(self) -> int | None:
        if self.final.startswith(ERROR_PREFIXES):
            try:
                return int(self.final.split(":", 1)[1].strip())
            except ValueError:
                return None
        return None

    def fields(self, index: int = 0) -> str:
        """The text after the prefix of information line `index`."""
        line = self.lines[index]
        return line.split(":", 1)[1].strip() if ":" in line else line


@dataclass(frozen=True, slots=True)
class UrcEvent:
    text: str
    payload: bytes | None = None
    corrupt: bool = False  # a pushed payload ran past its announced length: never deliver it
    push_id: int | None = None  # a direct push: its connect_id, parsed once from the header


def _pushed(text: str, data: bytes, connect_id: int, corrupt: bool = False) -> UrcEvent:
    return UrcEvent(text, data, corrupt, connect_id)


@dataclass(frozen=True, slots=True)
class PromptWanted:
    """The module printed `>`: write the command's data now (see AtProtocol.send_data)."""


@dataclass(frozen=True, slots=True)
class Done:
    response: Response


@dataclass(frozen=True, slots=True)
class Unknown:
    text: str


ProtocolEvent = UrcEvent | PromptWanted | Done | Unknown


class ProtocolError(Exception):
    """The caller broke the protocol's rules (two commands at once, a bad command line)."""


class AtProtocol:
    """Classifies lines against the command in flight; owns the framer."""

    def __init__(self, max_line: int = 4096, max_payload: int | None = None) -> None:
        self.framer = Framer(max_line)
        self.max_payload = MAX_PAYLOAD if max_payload is None else max_payload
        self.in_flight: Command | None = None
        self._response: Response | None = None
        self._got_ok = False
        self._urc_payload: tuple[str, int] | None = None  # a push header: (text, connect_id)
        self._held_push: tuple[str, bytes, int] | None = None  # until its line end is seen
        self._ready: deque[ProtocolEvent] = deque()
        self._push_ids: set[int] = set()
        self.counters: Counter[str] = Counter()
        self.probe_debt = 0             # probes abandoned before their information line (rule 7)
        self._debt_prefix: str | None = None
        self._swallow_final = False     # an abandoned probe's information line came: its final next
        self._probe_info = False        # the probe in flight has seen its own information line
        self.stale_possible = False     # a command was abandoned since the last attributed final
        self._crossed: str | None = None  # the prefix of a probe in flight at a restart (rule 9)

    # -- outgoing -----------------------------------------------------------------------------
    def send(self, command: Command) -> bytes:
        if self.in_flight is not None:
            raise ProtocolError(f"{self.in_flight.text} is still in flight")
        text = command.text
        # printable ASCII only (0x20-0x7E), checked in C: this runs for every QISEND
        if not text[:2].upper() == "AT" or not (text.isascii() and text.isprintable()):
            raise ProtocolError(f"refusing to send a malformed command line {text!r}")
        self.in_flight = command
        self._response = Response(command)
        self._got_ok = False
        self._probe_info = False
        self.framer.expect_prompt(command.data is not None)
        return text.encode("ascii") + b"\r"

    def send_data(self) -> bytes:
        """The payload to write after the prompt of the command in flight."""
        assert self.in_flight is not None and self.in_flight.data is not None
        return self.in_flight.data

    def abort(self) -> None:
        """Give up on the command in flight (its deadline passed); late lines become unknown, and
        a late final may still come (a probe's answer is recognised later, rules 6-8)."""
        cmd = self.in_flight
        if cmd is not None:
            self.stale_possible = True
            if cmd.probe and self._probe_info:
                self._swallow_final = True  # its information line came: only its final is due
            elif cmd.probe:
                self.probe_debt += 1
                self._debt_prefix = cmd.prefix
        self._nothing_in_flight()

    def reset(self) -> None:
        """The module reset or the port was reopened: nothing buffered is meaningful."""
        self.abort()
        self._settled()
        self.framer.reset()
        self._urc_payload = None
        self._held_push = None
        self._ready.clear()
        self._push_ids.clear()

    def forget_owed(self) -> None:
        """The module is off (POWERED DOWN): nothing asked before will be answered."""
        self._settled()

    def restarted(self) -> None:
        """The module restarted (RDY): the command in flight is given up, nothing asked before
        it is owed any more, and a probe in flight may still be answered (rule 9)."""
        cmd = self.in_flight
        self._settled()
        if cmd is not None:
            self.stale_possible = True  # rule 6: a crossing command's late final, for a probe
            self._crossed = cmd.prefix if cmd.probe else None
        self._nothing_in_flight()

    def set_push(self, connect_id: int, on: bool) -> None:
        """Whether `connect_id` is in direct-push mode (its recv URCs carry payload)."""
        (self._push_ids.add if on else self._push_ids.discard)(connect_id)

    # -- incoming -----------------------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        self.framer.feed(data)

    @property
    def awaiting_line_end(self) -> bool:
        """The last line buffered ends in a CR whose next byte has not arrived (an LF on its way,
        or a CR-only module): wait a few character times, then call end_pending_line()."""
        return self.framer.line_pending

    def end_pending_line(self) -> bool:
        """Silence after the pending line's CR: it was the line's end. next_event() then returns
        what that line means (a final result, a URC...). False if no line was pending."""
        return self.framer.end_pending_line()

    @property
    def payload_missing(self) -> int:
        """Payload bytes announced (`+QIRD: N`, a pushed `recv`) but not received yet."""
        return self.framer.payload_missing

    def next_event(self) -> ProtocolEvent | None:
        ready = self._ready
        if ready:
            return ready.popleft()
        framer = self.framer
        while True:
            ev = framer.next_event()
            held = self._held_push
            if ev is None:
                if held is not None and not framer.awaiting_end:
                    self._held_push = None  # its line end arrived: deliver it now, not when
                    return _pushed(*held)  # the next line happens to come
                return None
            if held is not None:  # a pushed payload is delivered once its end is sane
                self._held_push = None
                if isinstance(ev, Overrun):
                    self.counters["payload_overruns"] += 1
                    return _pushed(*held, corrupt=True)
                ready.append(_pushed(*held))
            out = self._handle(ev)
            if out is not None:
                if not ready:
                    return out
                ready.append(out)
            if ready:
                return ready.popleft()

    def _handle(self, ev: Line | Prompt | Payload | Overrun) -> ProtocolEvent | None:
        if isinstance(ev, Line):  # the common event first: this runs for every line
            if ev.truncated:
                self.counters["resyncs"] += 1
            return self._line(ev.text)
        if isinstance(ev, Payload):
            return self._payload(ev.data)
        if isinstance(ev, Overrun):
            return self._overrun()
        if self.in_flight is not None and self.in_flight.data is not None:
            return PromptWanted()
        self.counters["unknown_lines"] += 1
        return Unknown(">")

    def _payload(self, data: bytes) -> ProtocolEvent | None:
        if self._urc_payload is not None:
            (text, connect_id), self._urc_payload = self._urc_payload, None
            if not self.framer.awaiting_end:  # its line end is here already: deliver it now
                return _pushed(text, data, connect_id)
            self._held_push = (text, data, connect_id)  # until the byte after it is seen
            return None
        if self._response is not None:
            self._response.payload = (self._response.payload or b"") + data
            return None
        self.counters["unknown_lines"] += 1
        return Unknown(f"<{len(data)} payload bytes>")

    def _overrun(self) -> Unknown:
        """The payload just read was followed by data, not a line end: never deliver it."""
        self.counters["payload_overruns"] += 1
        self.counters["unknown_lines"] += 1
        if self._response is not None and self._response.payload is not None:
            self._response.corrupt = True
        return Unknown("<payload longer than announced>")

    def _line(self, text: str) -> ProtocolEvent | None:
        if (self._swallow_final or self.probe_debt) and self._late_probe_answer(text):
            return None
        cmd = self.in_flight
        if self._crossed and text.startswith(self._crossed) and (cmd is None or not cmd.probe):
            self._crossed = None  # rule 9: the probe that crossed the restart answers after all
            self._swallow_final = True
            return None
        if cmd is not None and cmd.prefix and text.startswith(cmd.prefix):
            if cmd.probe:
                self._probe_info = True
            return self._info(cmd, text)
        if is_urc(text):
            return self._urc(text)
        if cmd is None:
            self.counters["unknown_lines"] += 1
            return Unknown(text)
        if _is_echo(text, cmd):
            self.counters["echo_lines"] += 1
            return None
        final = self._final(cmd, text)
        if final is _CONSUMED:
            return None
        if final is not None:
            return final
        if cmd.bare_lines and _own_bare_line(text, cmd):
            assert self._response is not None
            self._response.lines.append(text)
            return None
        self.counters["unknown_lines"] += 1
        return Unknown(text)

    def _late_probe_answer(self, text: str) -> bool:
        """Rule 7: an abandoned probe's information line, or the final that follows it."""
        if self._swallow_final and _is_final(text):
            self._swallow_final = False
            self.counters["late_probe_answers"] += 1
            return True
        if self.probe_debt and self._debt_prefix and text.startswith(self._debt_prefix):
            self.probe_debt -= 1
            self._swallow_final = True
            return True
        return False

    def _nothing_in_flight(self) -> None:
        """The command in flight ended (its final, abandoned, or a restart): no response is
        being collected and no `>` prompt is awaited."""
        self.in_flight = None
        self._response = None
        self.framer.expect_prompt(False)

    def _settled(self) -> None:
        """Rule 8: a final was attributed (or the module reset): nothing earlier is still due."""
        self.probe_debt = 0
        self._swallow_final = False
        self.stale_possible = False
        self._crossed = None

    def _info(self, cmd: Command, text: str) -> Unknown | None:
        assert self._response is not None
        self._response.lines.append(text)
        if cmd.payload:
            size = _first_int(text)
            if size and size > self.max_payload:
                return self._bad_length(text)
            if size:
                self.framer.expect_payload(size)
        return None

    def _urc(self, text: str) -> ProtocolEvent | None:
        header = recv_header(text)
        if header is None:
            return UrcEvent(text)
        connect_id, size = header
        if size is not None and size > 0 and connect_id in self._push_ids:
            if size > self.max_payload:
                return self._bad_length(text)
            self._urc_payload = (text, connect_id)
            self.framer.expect_payload(size)
            return None
        return UrcEvent(text)

    def _bad_length(self, text: str) -> Unknown:
        """A payload length beyond max_payload: report the line, never wait for the bytes."""
        self.counters["bad_payload_lengths"] += 1
        self.counters["unknown_lines"] += 1
        return Unknown(text)

    def _final(self, cmd: Command, text: str) -> Done | object | None:
        """Done for a final result, _CONSUMED for the first OK of a two-stage command."""
        assert self._response is not None
        is_error = text in ERROR_FINALS or text.startswith(ERROR_PREFIXES)
        if cmd.probe and not self._probe_info and self.stale_possible and _is_final(text):
            self.counters["stale_finals"] += 1  # rule 6: a late final of what was abandoned
            return _CONSUMED
        if cmd.after_ok is not None and self._got_ok:
            if text in cmd.after_ok or is_error:
                return self._finish(text)
            return None
        if text in cmd.finals or is_error:
            if text == "OK" and cmd.after_ok is not None:
                self._got_ok = True
                return _CONSUMED
            return self._finish(text)
        return None

    def _finish(self, final: str) -> Done:
        response = self._response
        assert response is not None
        response.final = final
        crossed = self._crossed if self.in_flight is not None and self.in_flight.probe else None
        self._settled()
        self._crossed = crossed  # rule 9: only a final of another command than a probe ends it
        self._nothing_in_flight()
        return Done(response)


_CONSUMED = object()


def _is_final(text: str) -> bool:
    """A final result a probe could take (rules 6 and 7): OK or an error."""
    return text in OK_FINALS or text in ERROR_FINALS or text.startswith(ERROR_PREFIXES)


def _own_bare_line(text: str, cmd: Command) -> bool:
    """A bare information line of `cmd`: any line but a `+NAME:` one whose +NAME the command line
    does not contain (`modemctl at AT+CSQ` gets `+CSQ: 20,99`; ATI never gets `+CGREG: 1`)."""
    if not text.startswith("+") or ":" not in text:
        return True
    head = text.split(":", 1)[0].upper()
    sent = cmd.text.upper()
    at = sent.find(head)
    while at >= 0:
        end = at + len(head)
        if end == len(sent) or not (sent[end].isalnum() or sent[end] in "&_"):
            return True
        at = sent.find(head, end)
    return False


def _is_echo(text: str, cmd: Command) -> bool:
    """The command line coming back (echo on, e.g. again after a silent reboot), also with a
    byte or two of line noise in front of it ("TATE0" for ATE0)."""
    line, sent = text.upper(), cmd.text.upper()
    return line == sent or (len(line) <= len(sent) + 2 and line.endswith(sent))


def _first_int(text: str) -> int | None:
    body = text.split(":", 1)[1] if ":" in text else text
    head = body.split(",", 1)[0].strip()
    return int(head) if head.isascii() and head.isdigit() else None
