"""One module socket (one connect_id): the send, receive and ACK engine over the AT channel.

URC handlers (`on_recv`, `on_push`, `on_closed`, `on_open_result`) only set flags, queue pushed data
and wake tasks; every AT command is issued by the task that needs it. Data commands take a turn from
the scheduler so one bulk socket cannot starve the others.

Receiving has two modes (manual: access mode 0 "buffer", 1 "direct push"):
- push: the module writes the data to the port as it arrives (`+QIURC: "recv",id,len` + payload), so
  no AT+QIRD round trip stands between 1500-byte chunks. Pushed data waits in a small queue until the
  local side takes it; once more than PUSH_HIGH bytes wait (the local reader lags), the push governor
  switches the socket to buffer mode (AT+QISWTMD=id,0): the module's buffer, then the remote's TCP
  window hold the rest. Memory per socket stays at PUSH_HIGH plus what was already on the line.
- buffer: AT+QIRD per chunk, at the pace the local side takes the data (back-pressure). When a read
  finds the module's buffer empty, the local side is keeping up again: back to push (AT+QISWTMD=id,1).
Nothing else here buffers more than one QISEND chunk or one QIRD answer.

The socket's life cycle is a sans-IO state machine (state.py) that only this class feeds. It talks
to the module through `QuectelAt` only. A command lost on the line (CommandLost: the module answered
the channel's probe) is settled, never guessed: an uncertain QISEND with AT+QISEND=id,0 (exactly
once: `_settle_send`), a lost QIRD answer with AT+QIRD=id,0 (read again or reset), queries and
QISWTMD are simply repeated. A silent module (AtTimeout) ends the socket; the channel reports it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from ..at.channel import (
    AtCommandError,
    AtTimeout,
    ChannelClosed,
    CommandLost,
)
from ..at.commands import QuectelAt, ReadResult
from ..profiles import Profile
from .errors import (
    ACK_TIMEOUT,
    CHANNEL_CLOSED,
    COMMAND_ERROR,
    COMMAND_LOST,
    COMMAND_TIMEOUT,
    DOWNLOAD_CORRUPT,
    UPLOAD_UNCERTAIN,
    ConnectionLost,
    RemoteClosed,
    SocketError,
)
from .scheduler import TurnScheduler
from .signal import Signal
from .state import (
    Event,
    SendVerdict,
    SocketMachine,
    SocketState,
    download_check,
    send_verdict,
)
from .stats import SocketStats

STREAM_TYPES = frozenset({"TCP", "TCP INCOMING"})
DATAGRAM_TYPES = frozenset({"UDP", "UDP SERVICE"})
SERVER_TYPES = frozenset({"TCP LISTENER", "UDP SERVICE"})

SEND_BACKOFF = (0.005, 1.0)   # SEND FAIL: the module's send buffer is full; retry from 5 ms to 1 s
ACK_BACKOFF = (0.005, 1.0)    # unacked window full: poll AT+QISEND=id,0 from 5 ms to 1 s
SEND_ERROR_RETRIES = 3        # QISEND ERROR on a socket that did not report "closed"
LOST_RETRIES = 2              # an idempotent command (a query, QISWTMD) lost on the line: again
INCOMING_BACKLOG = 16         # accepted module connections waiting for the proxy
PUSH_HIGH = 64 * 1024         # pushed bytes the local side has not taken: above this, buffer mode
LAG_CONFIRM = 0.01            # s the queue must stay above PUSH_HIGH (not a burst from one read)
FAST_CONSUMER = 0.002         # s from handing data over to the next receive(): keeping up ...
FAST_STREAK = 4               # ... this many times in a row: push again

EMPTY = ReadResult(b"")


@dataclass(frozen=True)
class Uncertain:
    """A QISEND whose outcome the host does not know (see `_settle_send`)."""

    detail: str
    error: bool = False    # the module answered ERROR
    written: bool = True   # the payload may have reached the module
    junk: bool = False     # the channel completed the data phase with filler: reset


SendOutcome = str | Uncertain  # "SEND OK" | "SEND FAIL" | Uncertain


@dataclass(frozen=True)
class SocketSettings:
    unacked_window: int = 8192
    ack_poll_interval: float = 5.0
    ack_poll_count: int = 24
    reconcile_interval: float = 10.0
    direct_push: bool = True


@dataclass
class SocketEnv:
    """What a socket needs from its manager for one module session."""

    at: QuectelAt
    profile: Profile
    scheduler: TurnScheduler
    stats: SocketStats
    settings: SocketSettings
    closer: Callable[[ModuleSocket], Awaitable[None]]


class ModuleSocket:
    """State and data path of one connect_id."""

    def __init__(
        self, env: SocketEnv, context_id: int, service_type: str, host: str, port: int, *,
        local_port: int = 0, lost: trio.Event | None = None,
    ) -> None:
        self.env = env
        self.connect_id: int = -1
        self.context_id = context_id
        self.service_type = service_type
        self.host, self.port, self.local_port = host, port, local_port
        self.lost = lost if lost is not None else trio.Event()
        self.machine = SocketMachine()  # the life cycle (state.py); changed only by this class
        self.created = trio.current_time()
        self.label = ""        # forward / listener name, for connections()
        self.local_peer = ""   # the local client, for connections()
        self.server_id: int | None = None
        self.generation = 0    # link.module_generation when opened
        self.bytes_sent = 0
        self.bytes_received = 0
        self.acked = 0
        self.unacked = 0
        self.send_fail = 0
        self.failure: SocketError | None = None
        self.failed = trio.Event()
        self.open_result: int | None = None
        self.opened = trio.Event()
        self._rx = Signal()
        self._rx_more = False  # the last read found data: read again before waiting
        # direct push (see the module docstring)
        self.push_capable = False  # a TCP stream the module may push for (set by the manager)
        self.pushing = False       # the module's mode for this socket, as its last OK said
        self.mode_switches = 0
        self._pushed: deque[bytes] = deque()
        # the local side's non-blocking writer (the proxy's): pushed data goes straight through it
        # while receive() waits with nothing queued, without waking the receiving task
        self.deliver_nowait: Callable[[bytes], int] | None = None
        self._receiver_waiting = False  # receive() waits for a push with nothing queued
        self._handoff: list[bytes] = []  # pushed frames of the current read, for hand_over()
        self.pushed_bytes = 0      # pushed, not yet taken by receive()
        self.pushed_peak = 0
        self._lagging = Signal()   # wakes the push governor
        self._mode_lock = trio.Lock()
        self._handed_at: float | None = None  # when receive() last returned data
        self._fast_streak = 0
        self.governor_scope = trio.CancelScope()  # cancelled by the manager's close_socket
        self._incoming_in, self.incoming = trio.open_memory_channel(INCOMING_BACKLOG)

    def __repr__(self) -> str:
        return f"<ModuleSocket {self.connect_id} {self.service_type} {self.remote} {self.state}>"

    # -- the state machine (state.py): only these methods change it -------------------------------
    @property
    def state(self) -> str:
        """As `modemctl connections` shows it (opening, open, remote_closed, closing, closed)."""
        return self.machine.label()

    @property
    def remote_closed(self) -> bool:
        return self.machine.remote_closed

    @property
    def closing(self) -> bool:
        """AT+QICLOSE was written (or has ended): no more commands for this connect_id."""
        return self.machine.closing

    def opened_ok(self) -> None:
        """+QIOPEN: id,0, or an incoming connection accepted."""
        self.machine.handle(Event.OPENED)

    def begin_close(self) -> bool:
        """About to write AT+QICLOSE; False when a close already began (do not close twice)."""
        if self.machine.closing:
            return False
        self.machine.handle(Event.CLOSE)
        return True

    def end_close(self) -> None:
        """AT+QICLOSE ended (answered, or given up and the connect_id quarantined)."""
        self.machine.handle(Event.CLOSED)

    @property
    def remote(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def is_datagram(self) -> bool:
        return self.service_type in DATAGRAM_TYPES

    @property
    def acks_known(self) -> bool:
        """The unacked window and the ACK rule apply: TCP on a family with AT+QISEND=id,0."""
        return self.service_type in STREAM_TYPES and self.env.profile.has_ack_query

    # -- URC side (never awaits, never sends AT) ----------------------------------------------
    def on_recv(self) -> None:
        self._rx.set()

    def on_push(self, data: bytes) -> bool:
        """Direct push: the payload of a `+QIURC: "recv",id,len` (kept in order, never dropped
        unless an earlier frame broke: nothing after a hole is delivered). True: the frame was
        collected for `hand_over`, which the dispatcher calls once the reader has dispatched
        this read (the first frame collected of a read says so)."""
        if self._after_hole:
            return False
        size = len(data)
        self.bytes_received += size
        self.env.stats.bytes_received += size
        self.env.stats.bytes_pushed += size
        if self._receiver_waiting and self.deliver_nowait is not None:
            # the receiver is idle with nothing queued, so nothing can be ahead of this chunk:
            # the local side gets it straight from the reader, with the read's other frames
            # (one write per read, no wake-up of the receiving task)
            self._handoff.append(data)
            return len(self._handoff) == 1
        self._queue_pushed(data)
        return False

    def hand_over(self) -> None:
        """Write the frames collected from one read to the local side; what it does not take
        now is queued for the receiving task, as any pushed data."""
        handoff = self._handoff
        if not handoff:
            return
        data = handoff[0] if len(handoff) == 1 else b"".join(handoff)
        handoff.clear()
        if self._receiver_waiting and self.deliver_nowait is not None:
            taken = self.deliver_nowait(data)
            if taken == len(data):
                return
            data = data[taken:]
        self._queue_pushed(data)

    def _queue_pushed(self, data: bytes) -> None:
        """Pushed data for the receiving task (receive()); the push governor watches the size."""
        size = len(data)
        self._pushed.append(data)
        self.pushed_bytes += size
        if self.pushed_bytes > self.pushed_peak:
            self.pushed_peak = self.pushed_bytes
        self._rx.set()
        if self.pushed_bytes > PUSH_HIGH and self.pushing:
            self._lagging.set()

    def on_closed(self) -> None:
        if self.machine.state is SocketState.OPENING:
            return  # not ours yet: a stale URC for this connect_id
        closing = self.machine.closing  # then it is the echo of our own QICLOSE (RG500U)
        self.machine.handle(Event.REMOTE_CLOSE)
        if not closing:
            self._rx.set()

    def on_open_result(self, result: int) -> None:
        self.open_result = result
        if result == 0 and self.machine.state is SocketState.OPENING:
            self.machine.handle(Event.OPENED)  # now, so a "closed" right behind it is not lost
        self.opened.set()

    def offer(self, incoming: ModuleSocket) -> bool:
        """A TCP LISTENER hands an incoming connection to its proxy; False when nobody takes it."""
        try:
            self._incoming_in.send_nowait(incoming)
            return True
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False

    def fail(self, error: SocketError) -> SocketError:
        """Mark the socket dead (abnormally); the proxy resets its local client."""
        if self.failure is None:
            self.failure = error
            self.env.stats.lost[error.reason] += 1
        self.machine.handle(Event.FAIL)
        self.failed.set()
        self._rx.set()
        return error

    # -- commands -----------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., Awaitable[Any]], *args: Any, lost: str = "fail") -> Any:
        """Run one AT helper. A silent module (AtTimeout: the channel has told the supervisor)
        and a closed channel end the socket. A command lost on the line (CommandLost: the module
        is alive): lost="retry" runs it again (idempotent commands: queries, QISWTMD),
        lost="raise" hands it to the caller (QISEND, QIRD: they reconcile), else the socket ends.
        """
        attempt = 0
        while True:
            try:
                return await fn(*args)
            except CommandLost as exc:
                self.env.stats.commands_lost += 1
                if lost == "raise":
                    raise
                if lost == "retry" and attempt < LOST_RETRIES:
                    attempt += 1
                    continue
                raise self.fail(ConnectionLost(COMMAND_LOST, str(exc))) from None
            except AtTimeout as exc:
                raise self.fail(ConnectionLost(COMMAND_TIMEOUT, str(exc))) from None
            except ChannelClosed as exc:
                # also AtModuleReset: the module rebooted, its connections died with it. No
                # AT+QISEND=id,0 then: it would only answer ERROR, or be taken for silence
                # while the module boots
                raise self.fail(ConnectionLost(CHANNEL_CLOSED, str(exc))) from None

    def _command_error(self, exc: AtCommandError) -> SocketError:
        if exc.response.corrupt:  # a broken frame is never an EOF
            return self._corrupt(f"{exc.response.command.name}: payload framing broken")
        if self.remote_closed:
            return RemoteClosed(f"{exc.response.command.name} after remote close")
        return self.fail(ConnectionLost(COMMAND_ERROR, str(exc), exc.code))

    def _corrupt(self, detail: str) -> SocketError:
        """Downloaded bytes cannot be trusted (a broken frame, totals that disagree): the local
        client gets a reset, never a clean EOF or wrong bytes."""
        return self.fail(ConnectionLost(DOWNLOAD_CORRUPT, detail))

    @property
    def _after_hole(self) -> bool:
        """The downloaded stream broke: nothing after the hole may be delivered."""
        return self.failure is not None and self.failure.reason == DOWNLOAD_CORRUPT

    def on_push_corrupt(self) -> None:
        """A push frame for this socket broke (the channel's push_corrupt_sink)."""
        self._corrupt("pushed data corrupted by line noise")

    # -- receive path -------------------------------------------------------------------------
    async def receive(self) -> bytes:
        """The next chunk from the module's buffer; b"" once the remote closed and all is read."""
        return (await self.receive_result()).data

    async def receive_result(self) -> ReadResult:
        """Like receive(), with the sender's address (UDP SERVICE)."""
        if self._handed_at is not None:  # how fast the local side took the last chunk
            quick = trio.current_time() - self._handed_at < FAST_CONSUMER
            self._fast_streak = self._fast_streak + 1 if quick else 0
            self._handed_at = None
        result = await self._receive()
        if result.data:
            self._handed_at = trio.current_time()
        return result

    async def _receive(self) -> ReadResult:
        while True:
            if self._pushed:
                return ReadResult(self._take_pushed())
            if self._after_hole:
                raise self.failure  # nothing after a hole in the stream
            if self.machine.eof or (self.closing and self.remote_closed):
                return EMPTY
            if self.pushing:
                if self.remote_closed:
                    # all pushes came before "closed"; stop pushing, then read what the module
                    # may still hold (lossless close), in buffer mode
                    await self._switch_mode(False, final=True)
                    continue
                if self.failure is not None:
                    raise self.failure
                self._rx.clear()
                self._receiver_waiting = True  # on_push may deliver meanwhile (deliver_nowait)
                try:
                    await self._rx.wait()  # a push, "closed", a failure or the switch to buffer
                finally:
                    self._receiver_waiting = False
                continue
            if self._fast_streak >= FAST_STREAK and self._may_push():
                # the local side takes every chunk at once: it was a burst (or this process
                # itself) that filled the queue, not a slow reader
                await self._switch_mode(True)
                continue
            if self._rx_more or self._rx.is_set() or self.remote_closed:
                result = await self._drain_step()
                if result.data:
                    return result
                if self._may_push():  # the module's buffer is empty: the local side keeps up
                    await self._switch_mode(True)
                continue
            result = await self._wait_readable()
            if result is not None:
                return result

    def _take_pushed(self) -> bytes:
        """The oldest pushed chunk (at most one module read's worth: the proxy's buffers stay
        at one QIRD answer per connection whichever mode the data came in)."""
        data = self._pushed.popleft()
        self.pushed_bytes -= len(data)
        return data

    def _may_push(self) -> bool:
        return (
            self.push_capable and self.machine.state is SocketState.OPEN
            and self.env.settings.direct_push
        )

    async def _switch_mode(self, push: bool, *, final: bool = False) -> None:
        """AT+QISWTMD=id,1|0. The protocol frames this id's recv URCs as push from before the
        switch until the socket is closed: pushes already on the line may follow the OK."""
        async with self._mode_lock:
            if self.pushing == push:
                return
            if push:
                self.env.at.set_push(self.connect_id, True)
            try:
                await self._run(self.env.at.qiswtmd, self.connect_id, 1 if push else 0,
                                lost="retry")
            except AtCommandError:
                if push:
                    self.push_capable = False  # refused: this socket stays in buffer mode
                    return
                if not final:
                    self._lagging.set()  # the governor retries; the receive path drains anyway
                    return
            self.pushing = push
            self.mode_switches += 1
            self.env.stats.mode_switches += 1
            if not push:
                self._rx_more = True  # the module may hold data now: read before waiting
            self._rx.set()

    async def push_governor(self) -> None:
        """Run while the socket is open: back to buffer mode when the local side lags."""
        try:
            while True:
                await self._lagging.wait()
                self._lagging.clear()
                if self.pushing and self.pushed_bytes > PUSH_HIGH and not self.remote_closed:
                    await trio.sleep(LAG_CONFIRM)
                if self.pushing and self.pushed_bytes > PUSH_HIGH and not self.remote_closed:
                    self._fast_streak = 0
                    await self._switch_mode(False)
                    if self.pushing:
                        await trio.sleep(0.1)  # refused; try again shortly
        except SocketError:
            return  # the socket failed; its owner hears it through `failed`

    async def _drain_step(self) -> ReadResult:
        """One QIRD; the URC is edge-triggered, so keep reading until the buffer is empty."""
        closed_before = self.remote_closed
        self._rx.clear()
        result = await self._read_once()
        self._rx_more = bool(result.data)
        if not result.data and closed_before:
            state = self.machine.state
            if state is SocketState.REMOTE_CLOSED:
                await self._check_totals(at_eof=True)  # every byte arrived: then a clean EOF
                self.machine.handle(Event.EOF)
            elif state is SocketState.FAILED and self.failure is not None:
                raise self.failure
        return result

    @property
    def _has_totals(self) -> bool:
        return self.env.profile.has_read_totals and self.service_type in STREAM_TYPES

    async def _read_totals(self) -> Any:
        """AT+QIRD=id,0 (a background turn); None when the module cannot answer it now."""
        try:
            async with self.env.scheduler.turn(self.connect_id, background=True):
                return await self._run(self.env.at.qird_totals, self.connect_id, lost="retry")
        except AtCommandError as exc:
            error = self._command_error(exc)
            if isinstance(error, RemoteClosed):
                return None
            raise error from None

    async def _check_totals(self, *, at_eof: bool = False) -> Any:
        """Cross-check AT+QIRD=id,0 against what this socket delivered (buffer mode only: in
        push mode pushed bytes may still be on their way). A mismatch resets the connection."""
        if not self._has_totals or self.pushing:
            return None
        totals = await self._read_totals()
        if totals is None:
            return None
        check = download_check(self.bytes_received, totals.total, totals.unread, at_eof=at_eof)
        if not check.ok:
            raise self._corrupt(f"AT+QIRD={self.connect_id},0 disagrees: {check.detail}")
        return totals

    async def _wait_readable(self) -> ReadResult | None:
        """Wait for a recv URC; after `reconcile_interval` without one, poll once (lost URC)."""
        with trio.move_on_after(self.env.settings.reconcile_interval):
            await self._rx.wait()
            return None
        return await self._reconcile()

    async def _reconcile(self) -> ReadResult | None:
        stats = self.env.stats
        stats.reconcile_polls += 1
        if self._has_totals:
            totals = await self._check_totals()
            if totals is not None and totals.unread > 0:
                stats.reconcile_recoveries += 1
                self._rx.set()
            return None
        result = await self._read_once()
        if result.data:
            stats.reconcile_recoveries += 1
            self._rx_more = True
            return result
        return None

    async def _read_once(self) -> ReadResult:
        length = None if self.is_datagram else self.env.profile.max_read
        async with self.env.scheduler.turn(self.connect_id):
            attempt = 0
            while True:
                try:
                    result = await self._run(self.env.at.qird, self.connect_id, length,
                                             lost="raise")
                except CommandLost as exc:
                    # its answer may have been consumed by the module and lost on the line
                    attempt += 1
                    await self._after_lost_read(str(exc), attempt)
                    continue
                except AtCommandError as exc:
                    error = self._command_error(exc)
                    if isinstance(error, RemoteClosed):
                        return EMPTY
                    raise error from None
                if result.header:
                    break
                attempt += 1  # OK without its +QIRD line: a payload may have gone with it
                await self._after_lost_read("AT+QIRD: answered without its +QIRD line", attempt)
        size = len(result.data)
        self.bytes_received += size
        self.env.stats.bytes_received += size
        return result

    async def _after_lost_read(self, why: str, attempt: int) -> None:
        """A QIRD got no (whole) answer: read again only if the module handed nothing out."""
        if self.is_datagram and attempt <= LOST_RETRIES:
            return  # at worst one datagram is lost, as UDP may lose it: never a wrong byte
        if not self._has_totals or attempt > LOST_RETRIES:
            raise self._corrupt(f"{why}; what the module handed out is unknown")
        try:
            totals = await self._run(self.env.at.qird_totals, self.connect_id, lost="retry")
        except AtCommandError:
            raise self._corrupt(f"{why}; AT+QIRD={self.connect_id},0 failed: what the module "
                                "handed out is unknown") from None
        check = download_check(self.bytes_received, totals.total, totals.unread)
        if not check.ok:
            raise self._corrupt(f"{why}; {check.detail}")
        self.env.stats.reads_retried += 1

    # -- send path ----------------------------------------------------------------------------
    async def send(self, data: bytes, more: Callable[[], bytes | None] | None = None) -> None:
        """Send a stream chunk as fixed-length QISENDs of at most profile.max_send bytes.

        Chained (`QuectelAt.submit_stream`): the first QISEND of a turn is queued by this task;
        each next one is taken by the AT reader at the SEND OK of the one before and written at
        once (one command at a time on the line, as the manual requires, and no wake-up of this
        task per chunk). A command queued meanwhile (another socket's, an ACK poll, the
        supervisor's) goes first at the next SEND OK and the chain continues behind it; when
        another socket asks for a turn, the chain ends there and this task takes a new turn
        (fair turns, scheduler.py). A chunk that is not answered
        SEND OK goes through `_send_chunk` (SEND FAIL back-off, the exactly-once reconcile of
        an uncertain one); nothing is ever written behind it. `more()` gives the bytes the
        local side already has (None: nothing yet); they join the chain, so the line does not
        idle between two reads of the client."""
        chunks: deque[bytes] = deque()
        self._split(chunks, data)
        while chunks or (more is not None and self._refill(chunks, more)):
            if self.remote_closed:
                failed, outcome = chunks.popleft(), None  # _send_chunk raises RemoteClosed
            else:
                failed, outcome = await self._send_chained(chunks, more)
            if failed is not None:
                await self._send_chunk(failed, None, outcome)

    def _split(self, chunks: deque[bytes], data: bytes) -> None:
        step = self.env.profile.max_send
        if len(data) <= step:
            chunks.append(data)
            return
        view = memoryview(data)
        chunks.extend(bytes(view[offset : offset + step]) for offset in range(0, len(view), step))

    def _refill(self, chunks: deque[bytes], more: Callable[[], bytes | None]) -> bool:
        data = more()
        if not data:
            return False
        self._split(chunks, data)
        return True

    async def _send_chained(
        self, chunks: deque[bytes], more: Callable[[], bytes | None] | None
    ) -> tuple[bytes | None, SendOutcome | None]:
        """One turn of chained QISENDs from `chunks` (and what `more` adds), in order: (None,
        None) when every chunk written got SEND OK (the chain ran dry or gave way), else (the
        chunk that did not, its outcome).

        Exactly-once rests on this: the reader takes the next chunk only at the SEND OK of the
        one in flight, so at most one chunk is ever uncertain, and `bytes_sent` (the SEND OK
        bytes) is what the module has from this connection before it."""
        at, scheduler = self.env.at, self.env.scheduler
        await scheduler.take(self.connect_id)
        inflight = chunks.popleft()

        def next_chunk(queued: bool) -> bytes | None:
            nonlocal inflight
            self._sent(inflight)  # it got SEND OK
            inflight = None
            if scheduler.waiting or self.remote_closed or self.failure is not None:
                return None  # another socket waits for a turn: give ours back
            if not chunks and not (more is not None and self._refill(chunks, more)):
                return None
            inflight = chunks.popleft()
            return inflight

        try:
            try:
                request = at.submit_stream(self.connect_id, inflight, next_chunk)
            except ChannelClosed as exc:  # the port went away: ends the socket
                chunks.appendleft(inflight)
                raise self.fail(ConnectionLost(CHANNEL_CLOSED, str(exc))) from None
            outcome = await self._send_outcome(partial(at.wait_send, request))
        finally:
            scheduler.release()
        if outcome == "SEND OK":  # next_chunk counted it, and every chunk before it
            return None, None
        return inflight, outcome

    async def _send_outcome(self, wait: Callable[[], Awaitable[Any]]) -> SendOutcome:
        """What one QISEND's answer says: "SEND OK", "SEND FAIL" (certain) or Uncertain."""
        try:
            response = await self._run(wait, lost="raise")
        except CommandLost as exc:
            return Uncertain(str(exc), written=exc.data_written, junk=exc.junk)
        if response.corrupt:
            return Uncertain(f"{response.command.name}: answer garbled")
        if response.error:
            return Uncertain(f"{response.command.name}: {response.final}", error=True)
        if response.final in ("SEND OK", "SEND FAIL"):
            return response.final
        return Uncertain(f"{response.command.name}: unexpected final {response.final!r}")

    def _sent(self, chunk: bytes) -> None:
        self.bytes_sent += len(chunk)
        self.env.stats.bytes_sent += len(chunk)

    async def send_datagram(self, data: bytes, remote: tuple[str, int] | None = None) -> None:
        """One datagram, one QISEND (boundaries kept); `remote` for UDP SERVICE replies."""
        if not 0 < len(data) <= self.env.profile.max_send:
            raise ValueError(f"datagram of {len(data)} bytes (1-{self.env.profile.max_send})")
        await self._send_chunk(data, remote)

    async def _send_chunk(
        self, chunk: bytes, remote: tuple[str, int] | None, first: SendOutcome | None = None
    ) -> None:
        """SEND FAIL is back-pressure: wait and retry, never an error for the client. An
        uncertain QISEND is settled with the module (`_settle_send`) before anything is sent
        again. `first`: the module already answered this chunk so (from the chain)."""
        delay = SEND_BACKOFF[0]
        errors = 0
        while True:
            if first is not None:
                outcome, first = first, None
            else:
                if self.remote_closed:
                    raise RemoteClosed()
                async with self.env.scheduler.turn(self.connect_id):
                    outcome = await self._send_outcome(
                        partial(self.env.at.wait_send,
                                self.env.at.submit_send(self.connect_id, chunk, remote))
                    )
            if outcome == "SEND OK":
                self._sent(chunk)
                return
            if outcome == "SEND FAIL":
                errors = 0  # the module took the command: only ERRORs in a row are fatal
                self.send_fail += 1
                self.env.stats.send_fail += 1
            else:
                assert isinstance(outcome, Uncertain)
                if outcome.error:
                    if self.remote_closed:
                        raise RemoteClosed("AT+QISEND after remote close")
                    errors += 1
                    self.env.stats.send_retries_error += 1
                    if errors > SEND_ERROR_RETRIES:
                        raise self.fail(
                            ConnectionLost(COMMAND_ERROR, "AT+QISEND kept answering ERROR"))
                if await self._settle_send(chunk, outcome):
                    self._sent(chunk)
                    return
                if not outcome.error:
                    continue  # lost on the line: send it again at once
            await trio.sleep(delay)
            delay = min(delay * 2, SEND_BACKOFF[1])

    async def _settle_send(self, chunk: bytes, outcome: Uncertain) -> bool:
        """Exactly-once: does the module have this uncertain chunk? True: it has all of it (go
        on with the next); False: none of it (send it again). Anything else resets the
        connection: the client sees a reset, modemd never guesses."""
        self.env.stats.sends_uncertain += 1
        if outcome.junk:
            raise self.fail(ConnectionLost(UPLOAD_UNCERTAIN, f"{outcome.detail}; the data "
                                           "phase was completed with filler"))
        if self.is_datagram:
            # ERROR / nothing written: not sent. Maybe sent: dropped (UDP may lose a datagram,
            # it must never double one)
            return outcome.written and not outcome.error
        if not self.env.profile.has_ack_query:
            raise self.fail(ConnectionLost(
                UPLOAD_UNCERTAIN,
                f"{outcome.detail}; {self.env.profile.name} cannot say what the module has",
            ))
        try:
            async with self.env.scheduler.turn(self.connect_id):
                ack = await self._run(self.env.at.qisend_ack, self.connect_id, lost="retry")
        except AtCommandError as exc:
            raise self._command_error(exc) from None
        self.acked, self.unacked = ack.acked, ack.unacked
        verdict = send_verdict(self.bytes_sent, len(chunk), ack.total)
        if verdict is SendVerdict.INCONSISTENT:
            raise self.fail(ConnectionLost(UPLOAD_UNCERTAIN, (
                f"{outcome.detail}; total_send_length {ack.total} after {self.bytes_sent} sent "
                f"and a {len(chunk)}-byte chunk"
            )))
        if verdict is SendVerdict.TAKEN:
            self.env.stats.sends_settled_taken += 1
            return True
        self.env.stats.sends_resent += 1
        return False

    async def query_ack(self) -> None:
        """AT+QISEND=id,0: what the remote has acknowledged (a background turn: bookkeeping
        must not queue ahead of other sockets' data)."""
        try:
            async with self.env.scheduler.turn(self.connect_id, background=True):
                ack = await self._run(self.env.at.qisend_ack, self.connect_id, lost="retry")
        except AtCommandError as exc:
            raise self._command_error(exc) from None
        self.acked, self.unacked = ack.acked, ack.unacked

    def _maybe_unacked(self) -> bool:
        return self.bytes_sent > self.acked or self.unacked > 0

    async def wait_send_room(self) -> None:
        """Block (polling with back-off) while the module holds `unacked_window` unacked bytes."""
        if not self.acks_known:
            return
        window = self.env.settings.unacked_window
        if self.bytes_sent - self.acked < window:
            return
        delay = ACK_BACKOFF[0]
        while True:
            await self.query_ack()
            if self.unacked < window:
                return
            await trio.sleep(delay)
            delay = min(delay * 2, ACK_BACKOFF[1])

    async def flush(self, timeout: float) -> bool:
        """Wait (bounded) until the remote acknowledged everything sent; False on timeout."""
        if not self.acks_known or not self._maybe_unacked():
            return True
        delay = ACK_BACKOFF[0]
        with trio.move_on_after(timeout):
            while True:
                await self.query_ack()
                if self.unacked == 0:
                    return True
                await trio.sleep(delay)
                delay = min(delay * 2, ACK_BACKOFF[1])
        return False

    async def ack_watchdog(self) -> None:
        """Flowchart ACK rule: poll every interval; `count` polls without progress end the socket.

        Progress is "unacked reached 0 or the acked count grew": a slow but live bulk upload keeps
        its connection, a remote that stopped acknowledging loses it after interval*count seconds.
        """
        if not self.acks_known:
            await trio.sleep_forever()
        settings = self.env.settings
        misses, last_acked = 0, self.acked
        try:
            while True:
                await trio.sleep(settings.ack_poll_interval)
                if not self._maybe_unacked():
                    misses, last_acked = 0, self.acked
                    continue
                await self.query_ack()
                misses = 0 if self.unacked == 0 or self.acked > last_acked else misses + 1
                last_acked = self.acked
                if misses >= settings.ack_poll_count:
                    self.env.stats.ack_timeouts += 1
                    waited = settings.ack_poll_interval * settings.ack_poll_count
                    raise self.fail(ConnectionLost(
                        ACK_TIMEOUT, f"{self.unacked} bytes unacknowledged for {waited:g} s"
                    ))
        except RemoteClosed:
            await trio.sleep_forever()

    # -- life cycle ---------------------------------------------------------------------------
    async def aclose(self) -> None:
        """AT+QICLOSE (through the manager, which frees the connect_id once it answered)."""
        await self.env.closer(self)

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "connect_id": self.connect_id,
            "context_id": self.context_id,
            "service_type": self.service_type,
            "forward": self.label,
            "local_peer": self.local_peer,
            "remote": self.remote,
            "bytes_in": self.bytes_received,
            "bytes_out": self.bytes_sent,
            "unacked": self.unacked,
            "send_fail": self.send_fail,
            "age": round(now - self.created, 3),
            "state": self.state,
        }
