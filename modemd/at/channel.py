"""The AT channel: the serial port's only reader and only writer.

Two tasks share one sans-IO AtProtocol:
- the reader feeds every byte to the protocol and routes its events: URCs to subscribers (trio memory
  channels; direct-push data to the socket layer's sink). It also acts on the command in flight at
  once, without a task switch: it writes the QISEND payload when the `>` prompt is parsed, and when
  a final result is parsed it finishes the command and writes the next queued one (manual note 1:
  the next command only after the final result of the previous one; a chained request,
  `submit(follow=...)`, gets its next QISEND from its socket right there, so nothing stands
  between SEND OK and the next command and the socket's task is not woken per chunk);
- a line, and so a final result, is complete at its LF: when the last byte read is a line's CR, the
  reader waits a few character times for the LF (nothing is written meanwhile, so a module whose
  output is split between CR and LF never receives the next command while still printing); silence
  instead means a module that ends lines with CR only, and the CR ends the line. Lines modemd has no
  use for (real modules' chatter) are counted per prefix (`unsolicited`) and logged at DEBUG;
- `submit` writes a command at once when the channel is idle (no task switch to the writer either);
  the writer writes what the tty did not take at once and enforces each command's deadline.

A caller that is cancelled while its command is queued withdraws it; once written, the command runs to
its final result or deadline anyway, so the module and the protocol never disagree about what is in
flight.

Lost commands (the writer side). A command can be lost on the line: noise, a USB hiccup or a UART
overrun eats its CR (the module never sees it), or eats part of the answer. Each command carries an
expected response time (`Command.expect`, profile data). When the command in flight passes it without
its final result, the writer:

1. waits until the line is quiet (no byte read for QUIET; at most QUIET_MAX unless a payload is still
   arriving), so a late answer completes the command normally;
2. holds the queue, aborts the command in the protocol (its late lines become unknown lines) and
   writes the probe `AT+CMEE?` itself (PROBE_TIMEOUT, at most PROBES times);
3. probe answered: the module is alive. The answer is attributed, not timed (protocol.py rules
   6-8): a final before the probe's `+CMEE:` line is the lost command's late final (dropped), and a
   probe given up earlier in the series that answers later is recognised by its `+CMEE:` line and
   dropped with its final (its late answer proves the module alive too). So nothing the module still
   owes can end the next command, however late it comes. The request fails with `CommandLost` and
   the channel goes on with the next queued command. Nothing is rebooted: the caller retries,
   reconciles or resets its one connection;
4. every probe unanswered: the module is silent. The request fails with `AtTimeout`, the observer's
   `module_silent` tells the supervisor (the one route for command timeouts) and the queue stays held
   (nothing more is written) until `probe()` is answered (the supervisor's resync) or the channel is
   replaced (the ladder).

A fixed-length `AT+QISEND=<id>,<n>` whose `>` was not seen is special: if the command was lost, the
module is in command mode and answers the probe; if only the `>` was lost, the module is in data mode
and takes the probe as 3 of its n data bytes. So when a prompt was awaited, the first probe is `AT`
(DATA_PROBE_TEXT) and also accepts SEND OK / SEND FAIL as its answer (n <= 3: the probe completed
the data), and when it goes unanswered the channel completes the data phase with n - 3 FILLER bytes
(never the client's bytes, never an AT command) and reads the final: the request fails with
`CommandLost(data_written=True, junk=True)` and the socket layer resets that one connection. The
attributed series follows in every case (it decides alive or silent), so a late answer to that `AT`
never reaches the next command. Payload bytes are only ever written after a `>` was seen.

Commands without an expected time (`expect` None: QIACT, QIDEACT, QIOPEN, QPOWD, whose deadline is a
flowchart rule) end with `AtTimeout` at their deadline without a probe: the flowchart decides.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from ..pause import Pause
from .pacer import ReadPacer
from .protocol import (
    OK_FINALS,
    SEND_FINALS,
    AtProtocol,
    Command,
    Done,
    PromptWanted,
    ProtocolError,
    Response,
    Unknown,
    UrcEvent,
)
from .unsolicited import UnsolicitedLines
from .urc import ModuleReady, OtherUrc, PoweredDown, Urc, parse_urc

log = logging.getLogger("modemd.at")

QUIET = 0.2          # no byte read for this long: no late answer is on its way
QUIET_MAX = 0.5      # a line busy with other traffic (URCs, pushed data) is probed anyway after this
PROBE_TIMEOUT = 1.0  # one probe (a "300 ms" command, seeds-comparison §2.3)
PROBES = 3           # the probe series: all unanswered -> the module is silent
#: the channel's own probe: 3GPP TS 27.007 §9.1 read command, which every family answers (bring-up
#: sets AT+CMEE=1 on all of them) with `+CMEE: <n>` before its OK. No other command of the daemon
#: asks for `+CMEE:`, so the answer is attributed, not timed (protocol.py rules 6-8): a final before
#: that line is a late answer of what was abandoned, a `+CMEE:` line of a probe given up is dropped
#: with its final. It changes nothing in the module.
PROBE_TEXT = "AT+CMEE?"
PROBE_PREFIX = "+CMEE:"
#: a QISEND whose `>` was not seen: the module may be in data mode and take the probe as payload.
#: That probe stays V.250's `AT`: 3 bytes with its CR, the count the filler arithmetic is built on
#: (n - 3 filler bytes), and it must accept SEND OK / SEND FAIL, which no information line precedes.
#: An attributed probe series follows it, so its possibly misattributed answer never reaches the
#: next command.
DATA_PROBE_TEXT = "AT"
FILLER = b"\0"       # completes a data phase whose `>` was lost (never the client's bytes)
#: how long the reader waits for the LF of a line that ended in CR before it takes the CR as the
#: line's end (a CR-only module): a few character times at the measured line rate, but at least
#: LINE_END_FLOOR (a USB frame, a tty's burst) and at most LINE_END_CEIL
LINE_END_CHARS = 4
LINE_END_FLOOR = 0.003
LINE_END_CEIL = 0.05


class AtError(Exception):
    """Base of the channel's errors."""


class AtTimeout(AtError):
    def __init__(self, command: Command, seconds: float) -> None:
        super().__init__(f"{command.name}: no final result within {seconds:g} s")
        self.command = command
        self.seconds = seconds


class AtCommandError(AtError):
    def __init__(self, response: Response) -> None:
        what = "payload longer than announced (line noise)" if response.corrupt else response.final
        super().__init__(f"{response.command.name}: {what}")
        self.response = response

    @property
    def code(self) -> int | None:
        return self.response.error_code


class CommandLost(AtError):
    """The command got no final result within its expected response time, yet the module answered
    the channel's probe afterwards: the command or its answer was lost on the line (noise, a
    USB hiccup, an overrun ate its CR). The module is alive and is not rebooted: the caller decides
    what to do (retry, reconcile with a query, or reset its one connection).

    data_written: the command's payload (QISEND data after `>`) may have reached the module, so
    the caller must ask the module what it has (AT+QISEND=id,0) before sending again.
    junk: the `>` prompt was lost and the module took the probe as data, so the channel had to
    complete the data phase with filler: the remote may receive bytes that are not the client's,
    and the caller must reset that connection."""

    def __init__(self, command: Command, seconds: float, *, data_written: bool = False,
                 junk: bool = False) -> None:
        super().__init__(f"{command.name}: lost (no final result within {seconds:g} s, "
                         "the module answered a probe)")
        self.command = command
        self.seconds = seconds
        self.data_written = data_written
        self.junk = junk


class ChannelClosed(AtError):
    """The port went away or the channel stopped; the command was not (fully) executed."""


class AtModuleReset(ChannelClosed):
    """The module rebooted (`RDY` / `POWERED DOWN`) with the command in flight: it will never
    answer, so the caller hears at once instead of waiting out the deadline."""


class Transport(Protocol):
    async def receive_some(self, max_bytes: int = ...) -> bytes: ...
    async def send_all(self, data: bytes) -> None: ...


class Observer:
    """Hooks for metrics; the default does nothing."""

    def command_done(self, name: str, seconds: float, final: str) -> None: ...
    def command_timeout(self, name: str) -> None: ...
    def command_lost(self, name: str) -> None: ...
    def module_silent(self, name: str, seconds: float) -> None: ...
    def echo_back(self, name: str) -> None: ...
    def urc(self, urc: Urc) -> None: ...
    def pushed(self, connect_id: int, size: int) -> None: ...  # a direct-push frame (a recv URC)
    def unknown_line(self, text: str) -> None: ...
    def urc_dropped(self, urc: Urc) -> None: ...


#: a chained request's source of its next command (see `AtChannel.submit`): called by the reader
#: with the response that ended the current one in `follow_ok`, and whether other commands wait
Follow = Callable[[Response, bool], "Command | None"]


class _Request:
    __slots__ = ("command", "done", "response", "error", "withdrawn", "urgent", "follow",
                 "follow_ok")

    def __init__(self, command: Command, urgent: bool = False, follow: Follow | None = None,
                 follow_ok: frozenset[str] = frozenset()) -> None:
        self.command = command
        self.done = trio.Event()
        self.response: Response | None = None
        self.error: BaseException | None = None
        self.withdrawn = False
        self.urgent = urgent      # a probe: written ahead of the queue, even while it is held
        self.follow = follow      # a chain: the next command, written by the reader at once
        self.follow_ok = follow_ok

    def finish(self, response: Response | None = None, error: BaseException | None = None) -> None:
        self.response, self.error = response, error
        self.done.set()


def _probe(timeout: float = PROBE_TIMEOUT) -> _Request:
    """The channel's own attributed probe, written ahead of the queue even while it is held."""
    return _Request(Command(PROBE_TEXT, prefix=PROBE_PREFIX, timeout=timeout, probe=True),
                    urgent=True)


def _data_probe() -> _Request:
    """`AT` for a QISEND whose `>` was not seen (see DATA_PROBE_TEXT)."""
    return _Request(Command(DATA_PROBE_TEXT, finals=OK_FINALS | SEND_FINALS,
                            timeout=PROBE_TIMEOUT), urgent=True)


@dataclass(frozen=True)
class ChannelStats:
    """A snapshot of the channel's counters, for metrics (published by the supervisor)."""

    seconds_since_answer: float  # inf: no final result yet
    framing_resyncs: int
    line_end_silences: int
    unsolicited: dict[str, int]  # lines modemd has no use for, per prefix


class AtChannel:
    """Serialises commands over one transport and fans URCs out to subscribers."""

    def __init__(self, transport: Transport, *, observer: Observer | None = None) -> None:
        self.transport = transport
        self.protocol = AtProtocol()
        self.observer = observer or Observer()
        self._pending: deque[_Request] = deque()  # submitted, not written yet, in order
        self._running = False                      # run() is on: submit() may write at once
        self._writes: deque[bytes] = deque()  # what the tty did not take at once, in order
        self._wake = trio.Event()              # the writer: bytes the tty did not take, or _quiet
        self._watching = False                 # _quiet waits for the command's end or its `>`
        self._alarm: trio.CancelScope | None = None  # the writer's wait: due at the check time
        self.pause = Pause()                   # the reader's paced wait; cut when a command is written
        self._started = 0.0                    # trio time the current command was written
        self._deadline = math.inf
        self._check_at = math.inf              # its expected response time (or deadline) passes
        self._prompted = False                 # the current command's `>` was seen
        self._hold = False                     # probing, or the module is silent: write no queued
        self._suspect: _Request | None = None  # the request being probed for
        self._resync = False                   # a plain command crossed RDY: probe before the next
        self.silent = False                    # the probe series went unanswered (until a probe is)
        self.silence = trio.Event()            # set when it does (a fresh one once it answers)
        self.echo_off = False                  # ATE0 is in effect: an echo line means a silent reboot
        self._echo_mark = 0
        self.commands_lost = 0
        self._subscribers: list[trio.MemorySendChannel[Urc]] = []
        self._current: _Request | None = None
        self._closed: BaseException | None = None
        self.last_rx = -math.inf       # trio time of the last byte read
        self.pacer = ReadPacer()            # the reader's (a fresh one per run): waits, lingers
        self.last_final = -math.inf    # trio time of the last final result (module is answering)
        self.commands_sent = 0
        # direct-push data goes here, synchronously from the reader, instead of to subscribers
        self.push_sink: Callable[[int, bytes], None] | None = None  # (connect_id, payload)
        # ... and told once the events of each read are dispatched (push_sink may collect a
        # read's frames and hand them over together here)
        self.push_done: Callable[[], None] | None = None
        # ... and the connect_id whose pushed data was corrupted (its connection cannot go on)
        self.push_corrupt_sink: Callable[[int], None] | None = None
        # lines modemd has no use for, per prefix (modemd_unsolicited_lines_total)
        self.unsolicited = UnsolicitedLines()
        self.line_end_silences = 0  # lines whose CR was followed by silence (a CR-only module)

    # -- public API ---------------------------------------------------------------------------
    async def command(self, command: Command, *, check: bool = True) -> Response:
        """Run `command`; raise AtCommandError on ERROR/+CME ERROR when `check`, AtTimeout."""
        return await self.wait(self.submit(command), check=check)

    def submit(self, command: Command, *, follow: Follow | None = None,
               follow_ok: frozenset[str] = frozenset()) -> _Request:
        """Queue `command` without waiting for it (see `wait`).

        With `follow`, the request is a chain: when a command of it ends with a final result in
        `follow_ok` (not garbled, the caller still waiting), the reader calls
        `follow(response, queued)` and writes the command it returns at once, as the same
        request; when other commands queued meanwhile (`queued`), it goes behind them instead.
        The request ends (its waiter wakes) with the first final outside `follow_ok`, an error,
        or when `follow` returns None. A bulk upload thus costs its sending task no wake-up per
        QISEND, the line no gap between SEND OK and the next command, and other commands still
        go at the first SEND OK after they queue."""
        if self._closed is not None:
            raise ChannelClosed(str(self._closed) or "AT channel is closed")
        request = _Request(command, follow=follow, follow_ok=follow_ok)
        self._pending.append(request)
        if self._running and self._current is None:
            self._start_next()  # idle: write it now (_start arms the writer's alarm)
        return request

    async def wait(self, request: _Request, *, check: bool = True) -> Response:
        """The response of a submitted request; a caller cancelled while it is still queued
        withdraws it (once written, it runs to its final result anyway)."""
        try:
            await request.done.wait()
        except trio.Cancelled:
            request.withdrawn = True
            raise
        if request.error is not None:
            raise request.error
        assert request.response is not None
        if check and request.response.error:
            raise AtCommandError(request.response)
        return request.response

    def subscribe(self, buffer: int = 1024) -> trio.MemoryReceiveChannel[Urc]:
        """A new stream of every URC from now on; close the receiver to unsubscribe."""
        send, receive = trio.open_memory_channel(buffer)
        self._subscribers.append(send)
        return receive

    def set_push(self, connect_id: int, on: bool) -> None:
        self.protocol.set_push(connect_id, on)

    def seconds_since_answer(self) -> float:
        return trio.current_time() - self.last_final

    def stats(self) -> ChannelStats:
        return ChannelStats(self.seconds_since_answer(), self.protocol.counters["resyncs"],
                            self.line_end_silences, dict(self.unsolicited.counts))

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def echo_lines(self) -> int:
        """Echo lines of our own commands seen so far (the protocol drops them)."""
        return self.protocol.counters["echo_lines"]

    def echo_disabled(self) -> None:
        """ATE0 was answered OK: from now on an echo of our commands means the module restarted
        without the host seeing RDY (line-shapes A3); the observer's `echo_back` hears of it."""
        self.echo_off = True
        self._echo_mark = self.echo_lines

    async def probe(self, timeout: float = PROBE_TIMEOUT) -> bool:
        """One probe ahead of every queued command, written even while the queue is held after a
        silence: True when the module answered (its own answer, any final result, or a late
        answer of a probe given up earlier; that releases the queue), False when it stayed
        silent for `timeout`. Raises AtModuleReset / ChannelClosed."""
        request = _probe(timeout=timeout)
        if self._closed is not None:
            raise ChannelClosed(str(self._closed) or "AT channel is closed")
        late = self._late_answers()
        self._pending.appendleft(request)
        if self._running and self._current is None:
            self._start_next()
        try:
            await self.wait(request, check=False)
        except AtTimeout:
            if self._late_answers() == late:
                return False
            self._echo_noticed(request.command.name)  # its own echo may have come with it
        if self.silent:
            log.info("the module answers again: writing the queued commands")
        self._release()
        return True

    # -- tasks --------------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the reader and writer until the transport fails or the caller cancels."""
        self._closed = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                self._running = True  # from here submit() may write; the writer arms deadlines
                task_status.started()
        except BaseException as exc:
            self._close(exc)
            raise
        self._close(ChannelClosed("AT channel stopped"))

    def reset(self) -> None:
        """The module rebooted: forget the framing state (called by the supervisor)."""
        self.protocol.reset()

    def _close(self, exc: BaseException) -> None:
        reason = exc if isinstance(exc, AtError) else ChannelClosed(f"AT channel stopped: {exc!r}")
        if not isinstance(reason, ChannelClosed):
            reason = ChannelClosed(str(reason))
        self._closed = reason
        self._running = False
        self._writes.clear()
        for request in (self._current, self._suspect):
            if request is not None and not request.done.is_set():
                request.finish(error=reason)
        self._current = self._suspect = None
        while self._pending:
            self._pending.popleft().finish(error=reason)

    async def _reader(self) -> None:
        try:
            await self._read_loop()
        finally:
            self.pause.close()

    async def _read_loop(self) -> None:
        self.pacer = pacer = ReadPacer()
        pause = self.pause
        read_nowait = getattr(self.transport, "read_nowait", None)
        data = None
        while True:
            if not data:
                if self.protocol.awaiting_line_end:
                    data = await self._line_end_or_silence()
                    if not data:
                        continue
                else:
                    data = await self.transport.receive_some(65536)
            self.last_rx = now = trio.current_time()
            self.protocol.receive(data)
            self._dispatch_all()
            wait = pacer.after_read(now, len(data), self.protocol.payload_missing,
                                    idle=self.protocol.in_flight is None)
            data = None
            if wait:  # a payload's rest, or the next frame of a stream, in one read (pacer.py)
                await pause.wait(wait)  # cut short when a command is written: its answer is due
                if read_nowait is not None:  # the wait was the checkpoint: no second one
                    data = read_nowait(65536)
                    if not data:
                        pacer.nothing_read()

    def line_end_wait(self) -> float:
        """Seconds to wait for the LF after a line's CR: a few character times."""
        rate = self.pacer.rate
        wait = LINE_END_CHARS / rate if rate else 0.0
        return min(max(wait, LINE_END_FLOOR), LINE_END_CEIL)

    async def _line_end_or_silence(self) -> bytes | None:
        """The last line read ends in CR: a final result is complete only at its LF, so nothing
        is written before the LF (or any next byte) is read. Silence for a few character times
        instead means a module that ends its lines with CR only: the CR ended the line."""
        with trio.move_on_after(self.line_end_wait()):
            return await self.transport.receive_some(65536)
        self.line_end_silences += 1
        self.protocol.end_pending_line()
        self._dispatch_all()
        return None

    def _dispatch_all(self) -> None:
        """Act on every event the bytes read so far complete; then `push_done`: the socket layer
        hands a read's pushed frames over in one write."""
        while (event := self.protocol.next_event()) is not None:
            self._dispatch(event)
        if self.push_done is not None:
            self.push_done()

    def _unsolicited(self, text: str) -> None:
        """A line modemd has no use for: counted per prefix, at DEBUG; a new prefix once at INFO."""
        prefix, announce = self.unsolicited.note(text, trio.current_time())
        if announce:
            log.info("the module prints %r lines modemd has no use for (e.g. %r): counted in "
                     "modemd_unsolicited_lines_total, logged at debug", prefix, text[:120])
        else:
            log.debug("unsolicited line from module: %r", text[:200])

    def _dispatch(self, event: object) -> None:
        if isinstance(event, UrcEvent):
            if event.push_id is not None:
                self._pushed(event)
                return
            urc = parse_urc(event.text, event.payload)
            if isinstance(urc, OtherUrc):
                self._unsolicited(urc.text)
            self._publish(urc)
            if isinstance(urc, (ModuleReady, PoweredDown)):
                self._module_restarted(urc)
        elif isinstance(event, PromptWanted):
            self._write(self.protocol.send_data())  # the payload, right now
            self._prompt_seen()
        elif isinstance(event, Done):
            self.last_final = trio.current_time()
            self._end_current(response=event.response)
        elif isinstance(event, Unknown):
            self.observer.unknown_line(event.text)
            if event.text.startswith("<"):  # the protocol's marker: payload bytes were discarded
                log.warning("module output discarded: %s", event.text)
            else:  # real modules' chatter, a garbled echo, a late answer: normal on a real line
                self._unsolicited(event.text)

    def _module_restarted(self, urc: ModuleReady | PoweredDown) -> None:
        """RDY or POWERED DOWN: the command in flight ends with AtModuleReset, at once, and
        nothing asked before the restart is owed any more. At RDY a probe in flight may still
        be answered: the module can read it just after booting and answer it after its RDY (the
        emulator's boot does; a probe written as a module comes up can cross its RDY on the
        line). Its late answer is then dropped, never taken as the answer of the command written
        next (protocol.py rule 9). A plain command may cross the RDY the same way, and its late
        final (an OK like any other) cannot be told from the next command's: the writer then
        holds the queue and writes one probe first (`_resync_after_restart`)."""
        protocol = self.protocol
        in_flight = protocol.in_flight is not None
        if isinstance(urc, ModuleReady):
            if in_flight and not protocol.in_flight.probe and self._suspect is None:
                self._resync = self._hold = True  # the writer probes before the next command
                self._wake.set()
            protocol.restarted()
        else:
            protocol.abort()
            protocol.forget_owed()  # switched off: not even the command in flight is answered
        current = self._current
        if in_flight and current is not None:
            self._end_current(error=AtModuleReset(
                f"{current.command.name}: the module reset ({urc.text}) before answering"))

    def _pushed(self, event: UrcEvent) -> None:
        """A direct-push frame: its payload goes to the socket layer synchronously (the data
        path's fast lane: the header was parsed once, by the protocol; no URC object)."""
        connect_id = event.push_id
        assert connect_id is not None and event.payload is not None
        if event.corrupt:  # line noise inside pushed data: those bytes are never delivered
            log.warning("pushed payload longer than announced (line noise): %r", event.text)
            self.observer.unknown_line(event.text)
            if self.push_corrupt_sink is not None:
                self.push_corrupt_sink(connect_id)
            return
        if self.push_sink is None:  # nobody takes the fast lane: an ordinary URC
            self._publish(parse_urc(event.text, event.payload))
            return
        self.observer.pushed(connect_id, len(event.payload))
        self.push_sink(connect_id, event.payload)

    def _publish(self, urc: Urc) -> None:
        self.observer.urc(urc)
        for send in list(self._subscribers):
            try:
                send.send_nowait(urc)
            except trio.WouldBlock:
                log.warning("URC subscriber is not keeping up; dropped %r", urc)
                self.observer.urc_dropped(urc)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)

    def _write_nowait(self, data: bytes) -> int:
        """What the transport takes without waiting (0 if it cannot say: the writer sends it)."""
        write = getattr(self.transport, "write_nowait", None)
        if write is None:
            return 0
        try:
            return write(data)
        except Exception:  # noqa: BLE001 - the writer's send_all raises it properly
            return 0

    def _write(self, data: bytes) -> None:
        """Write now what the tty takes; the writer task sends the rest, in order."""
        if not self._writes:
            sent = self._write_nowait(data)
            if sent == len(data):
                return
            data = data[sent:]
        self._writes.append(data)
        self._wake.set()

    def _start(self, request: _Request) -> None:
        """Write `request` (the channel is idle) unless it was withdrawn."""
        if request.withdrawn:
            return
        try:
            line = self.protocol.send(request.command)
        except ProtocolError as exc:  # a malformed command line fails its caller, not the channel
            request.finish(error=exc)
            return
        self._current = request
        self.pause.cut()
        self._started = trio.current_time()
        command = request.command
        self._deadline = self._started + command.timeout
        expect = command.expect
        self._check_at = self._deadline if expect is None else self._started + min(
            expect, command.timeout)
        self._prompted = False
        self.commands_sent += 1
        self._arm()
        self._write(line)

    def _start_next(self) -> None:
        while self._current is None and self._pending:
            if self._hold and (self._suspect is not None or not self._pending[0].urgent):
                return  # probing (even a probe waits), or silent: only a probe goes out
            self._start(self._pending.popleft())

    def _prompt_seen(self) -> None:
        """The `>` of the command in flight: its expected time restarts once the payload is out."""
        self._prompted = True
        current = self._current
        expect = None if current is None else current.command.expect
        if expect is not None and current is not None and current.command.data is not None:
            wire = self._wire_time(len(current.command.data))
            self._check_at = min(self._deadline, trio.current_time() + wire + expect)
        self._arm()
        self._notify_watch()

    def _arm(self) -> None:
        """The writer sleeps until the command in flight passes its expected time. Its alarm (a
        cancel scope's deadline) is only ever moved earlier here, for a command due sooner than
        the alarm: a later check time (the next QISEND of a stream, a `>` that restarted the
        clock) costs no deadline change per command; the writer finds it when the alarm rings
        and sleeps again until then."""
        alarm = self._alarm
        if alarm is not None and self._current is not None and self._check_at < alarm.deadline:
            alarm.deadline = self._check_at

    def _notify_watch(self) -> None:
        """The command in flight ended or got its `>`: wake `_quiet` if it watches for that."""
        if self._watching:
            self._wake.set()

    def _wire_time(self, size: int) -> float:
        """Seconds `size` bytes take on the line (10 bits a byte; 0 when the baud rate is unknown)."""
        baud = getattr(self.transport, "baudrate", None)
        return size * 10 / baud if isinstance(baud, (int, float)) and baud > 0 else 0.0

    def _release(self) -> None:
        """The module answers: write the queued commands again."""
        if self.silent:
            self.silence = trio.Event()
        self.silent = False
        if self._hold and self._suspect is None:
            self._hold = False
            self._start_next()

    def _end_current(self, response: Response | None = None,
                     error: BaseException | None = None) -> None:
        """The command in flight ended (reader: final result or module reset): tell its caller
        and write the next queued command at once."""
        request = self._current
        if request is None:
            return
        self._current = None
        if response is not None:
            self.observer.command_done(
                request.command.name, trio.current_time() - self._started, response.final
            )
            if self._followed(request, response):
                return
        self._echo_noticed(request.command.name)
        request.finish(response, error)
        self._start_next()
        self._notify_watch()

    def _followed(self, request: _Request, response: Response) -> bool:
        """A chain goes on: its next command is written now, as the same request (`submit`)."""
        follow = request.follow
        if (follow is None or request.withdrawn or response.corrupt
                or response.final not in request.follow_ok):
            return False
        queued = bool(self._pending) or self._hold
        try:
            command = follow(response, queued)
        except Exception:  # a bug in the chain's owner must not stop the port's only reader
            log.exception("%s: the chain's next command failed; the chain ends here",
                          request.command.name)
            return False
        if command is None:
            return False
        self._echo_noticed(request.command.name)
        request.command = command
        if queued:
            self._pending.append(request)  # behind the commands that queued meanwhile
            self._start_next()
        else:
            self._start(request)
            if self._current is not request:  # a malformed command: it failed, go on
                self._start_next()
        self._notify_watch()
        return True

    def _echo_noticed(self, name: str) -> None:
        """An echo while ATE0 is in effect: the module restarted (told once)."""
        if self.echo_off and self.echo_lines > self._echo_mark:
            self._echo_mark = self.echo_lines
            self.echo_off = False  # once: the supervisor re-initialises (ATE0 again)
            log.warning("%s: echoed although ATE0 is in effect: the module restarted", name)
            self.observer.echo_back(name)

    async def _flush(self) -> None:
        while self._writes:
            await self.transport.send_all(self._writes[0])
            self._writes.popleft()

    async def _writer(self) -> None:
        while True:
            await self._flush()
            if self._resync:
                await self._resync_after_restart()
                continue  # flush what it started
            if self._current is None:
                self._start_next()  # after a timeout, or queued before the writer ran
                if self._current is not None or self._writes:
                    continue
            self._wake = trio.Event()
            # asleep until bytes wait to be written or the alarm rings (`_arm`: no wake-up per
            # command); a command whose check time is still ahead just re-arms it
            try:
                with trio.CancelScope() as alarm:
                    self._alarm = alarm
                    self._arm()  # from infinity to the current command's check time, if any
                    await self._wake.wait()
            finally:
                self._alarm = None
            current = self._current
            if (alarm.cancelled_caught and current is not None
                    and trio.current_time() >= self._check_at):
                if current.command.expect is None:
                    self._timeout(current)
                else:
                    await self._probe_for(current)

    async def _resync_after_restart(self) -> None:
        """A plain command crossed the module's RDY: the booting module may have read it and
        answer it only now. One attributed probe goes before the queued commands: that late
        answer comes before the probe's `+CMEE:` line and is dropped (protocol.py rule 6), so the
        command written next gets its own answer. Unanswered, the probe stays a debt (rule 7)
        and the queue goes on: the supervisor's own checks follow a restart anyway."""
        self._resync = False
        try:
            if self._current is None:  # else a probe asked for meanwhile is in flight: the same
                await self._answered(_probe())
        finally:
            if self._suspect is None and not self.silent:
                self._hold = False
                self._start_next()

    def _timeout(self, request: _Request) -> None:
        command = request.command
        self.protocol.abort()
        self._current = None
        self.observer.command_timeout(command.name)
        log.warning("%s: no final result within %g s", command.name, command.timeout)
        request.finish(error=AtTimeout(command, command.timeout))

    # -- lost commands: quiet line, probe, CommandLost or silence (see the module docstring) ----------
    async def _quiet(self, request: _Request | None, most: float = QUIET_MAX) -> None:
        """Until no byte was read for QUIET (at most `most`, longer while a payload arrives and
        `request`'s deadline allows), or until `request` ends or gets its `>` (the writer's wake)."""
        limit = trio.current_time() + most
        if request is not None:
            self._wake = trio.Event()
            self._watching = True
        try:
            await self._quiet_until(request, limit)
        finally:
            self._watching = False

    async def _quiet_until(self, request: _Request | None, limit: float) -> None:
        while True:
            now = trio.current_time()
            quiet_at = self.last_rx + QUIET
            if now >= quiet_at:
                return
            if now >= limit and not (self.protocol.payload_missing and now < self._deadline):
                return
            until = quiet_at if now >= limit else min(quiet_at, limit)
            if request is None:
                await trio.sleep_until(until)
                continue
            with trio.move_on_at(until):
                await self._wake.wait()
                return

    async def _clear_line(self) -> None:
        """One more `AT`: filler bytes that reached a module in command mode (no CR) are ended
        by its CR and answered ERROR, instead of gluing onto the next queued command."""
        probe = _data_probe()
        if not await self._ask(probe):
            self._drop_unanswered(probe)

    async def _ask(self, probe: _Request, seconds: float = PROBE_TIMEOUT) -> bool:
        """Write a probe now (the channel holds its queue: nothing else is in flight) and wait
        up to `seconds` for its answer: whether it came (unanswered, it is still in flight)."""
        self._start(probe)
        await self._flush()
        with trio.move_on_after(seconds):
            await probe.done.wait()
        return probe.done.is_set()

    def _drop_unanswered(self, probe: _Request) -> None:
        """A probe that got no answer is no longer in flight: the protocol keeps it as a debt
        (its late answer is recognised and dropped, protocol.py rule 7)."""
        if self._current is probe:
            self.protocol.abort()
            self._current = None

    def _late_answers(self) -> int:
        """Answers of probes given up earlier, so far: each proves the module alive."""
        return self.protocol.counters["late_probe_answers"]

    async def _answered(self, probe: _Request, seconds: float = PROBE_TIMEOUT) -> bool:
        """Write `probe` and wait for its answer; a late answer of an earlier probe in the
        meantime proves the module alive too (the probe then stays a debt)."""
        late = self._late_answers()
        if await self._ask(probe, seconds):
            return True
        self._drop_unanswered(probe)
        return self._late_answers() > late

    async def _data_phase(self, command: Command) -> tuple[_Request | None, bool]:
        """A QISEND whose `>` was not seen: `AT` (taken as data by a module in data mode), and
        when it goes unanswered, the data phase completed with filler. (answer, junk written)."""
        assert command.data is not None
        probe = _data_probe()
        if await self._ask(probe):
            return probe, False
        rest = len(command.data) - len(DATA_PROBE_TEXT) - 1
        if rest > 0:
            log.warning("%s: no `>` and no answer to AT: completing the data phase with %d filler "
                        "bytes", command.name, rest)
            self._write(FILLER * rest)
            await self._flush()
        with trio.move_on_after(PROBE_TIMEOUT + self._wire_time(max(rest, 0))):
            await probe.done.wait()
        if probe.done.is_set():
            return probe, True
        self._drop_unanswered(probe)
        return None, True

    async def _probe_for(self, request: _Request) -> None:
        """The command in flight passed its expected time: quiet line, then the probe series."""
        command = request.command
        prompted = self._prompted
        await self._quiet(request)
        if request.done.is_set() or self._current is not request or self._prompted != prompted:
            return  # a late answer (or its `>`) came: the writer re-arms its expected time
        written = self._started
        seconds = trio.current_time() - written
        prompt_awaited = command.data is not None and not self._prompted
        data_written = command.data is not None and self._prompted
        log.warning("%s: no final result within %.1f s: probing the module with %s",
                    command.name, seconds, PROBE_TEXT)
        self._hold = True
        self._suspect = request
        self.protocol.abort()  # the lost command's late lines are unknown lines from now on
        self._current = None
        answer: _Request | None = None
        junk = False
        try:
            if prompt_awaited:
                answer, junk = await self._data_phase(command)
                if answer is not None and isinstance(answer.error, AtModuleReset):
                    request.finish(error=AtModuleReset(
                        f"{command.name}: the module reset before answering"))
                    return
                response = None if answer is None else answer.response
                if response is not None and response.final in SEND_FINALS:
                    junk = True  # n <= 3: the probe itself completed the data phase
                elif junk and answer is not None:
                    await self._clear_line()  # filler went to a module in command mode
            # the attributed series: whatever the module still owes (the lost command's late
            # answer, an `AT` above) comes before its answer and is dropped (protocol.py 6-8)
            alive = False
            for _ in range(PROBES):
                probe = _probe()
                alive = await self._answered(probe)
                if probe.done.is_set() and isinstance(probe.error, AtModuleReset):
                    request.finish(error=AtModuleReset(
                        f"{command.name}: the module reset before answering"))
                    return
                if alive:
                    break
            if alive:
                self.commands_lost += 1
                self.observer.command_lost(command.name)
                log.warning("%s: lost on the line (the module answered the probe)%s",
                            command.name, ", data phase completed with filler" if junk else "")
                request.finish(error=CommandLost(
                    command, seconds, data_written=data_written or junk, junk=junk))
                return
            seconds = trio.current_time() - written
            self.silent = True
            self.silence.set()
            log.error("%s: no answer, and %d probes unanswered: the module is silent",
                      command.name, PROBES)
            self.observer.command_timeout(command.name)
            self.observer.module_silent(command.name, seconds)
            request.finish(error=AtTimeout(command, seconds))
        finally:
            self._suspect = None
            if not request.done.is_set():  # cancelled (the channel is closing)
                request.finish(error=ChannelClosed("AT channel stopped while probing"))
            if not self.silent:
                self._hold = False
                self._start_next()
