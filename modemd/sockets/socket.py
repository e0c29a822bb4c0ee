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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from ..at.channel import AtCommandError, AtSkipped, AtTimeout, ChannelClosed
from ..at.commands import QuectelAt, ReadResult
from ..profiles import Profile
from .errors import (
    ACK_TIMEOUT,
    CHANNEL_CLOSED,
    COMMAND_ERROR,
    COMMAND_TIMEOUT,
    ConnectionLost,
    RemoteClosed,
    SocketError,
)
from .scheduler import TurnScheduler
from .signal import Signal
from .stats import SocketStats

STREAM_TYPES = frozenset({"TCP", "TCP INCOMING"})
DATAGRAM_TYPES = frozenset({"UDP", "UDP SERVICE"})
SERVER_TYPES = frozenset({"TCP LISTENER", "UDP SERVICE"})

SEND_BACKOFF = (0.005, 1.0)   # SEND FAIL: the module's send buffer is full; retry from 5 ms to 1 s
ACK_BACKOFF = (0.005, 1.0)    # unacked window full: poll AT+QISEND=id,0 from 5 ms to 1 s
SEND_ERROR_RETRIES = 3        # QISEND ERROR on a socket that did not report "closed"
PIPELINE = 2                  # QISENDs one socket keeps queued: the next is written at SEND OK
SEND_OK = frozenset({"SEND OK"})
INCOMING_BACKLOG = 16         # accepted module connections waiting for the proxy
PUSH_HIGH = 64 * 1024         # pushed bytes the local side has not taken: above this, buffer mode
LAG_CONFIRM = 0.01            # s the queue must stay above PUSH_HIGH (not a burst from one read)
FAST_CONSUMER = 0.002         # s from handing data over to the next receive(): keeping up ...
FAST_STREAK = 4               # ... this many times in a row: push again

EMPTY = ReadResult(b"")


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
        self.state = "opening"  # opening | open | closing | closed
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
        self.remote_closed = False
        self.failure: SocketError | None = None
        self.failed = trio.Event()
        self.open_result: int | None = None
        self.opened = trio.Event()
        self._rx = Signal()
        self._rx_more = False
        self._eof = False
        # direct push (see the module docstring)
        self.push_capable = False  # a TCP stream the module may push for (set by the manager)
        self.pushing = False       # the module's mode for this socket, as its last OK said
        self.mode_switches = 0
        self._pushed: deque[bytes] = deque()
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

    def on_push(self, data: bytes) -> None:
        """Direct push: the payload of a `+QIURC: "recv",id,len` (kept in order, never dropped)."""
        self._pushed.append(data)
        size = len(data)
        self.pushed_bytes += size
        if self.pushed_bytes > self.pushed_peak:
            self.pushed_peak = self.pushed_bytes
        self.bytes_received += size
        self.env.stats.bytes_received += size
        self.env.stats.bytes_pushed += size
        self._rx.set()
        if self.pushed_bytes > PUSH_HIGH and self.pushing:
            self._lagging.set()

    def on_closed(self) -> None:
        if self.state in ("closing", "closed"):
            return  # the echo of our own QICLOSE (RG500U close/mode=1)
        self.remote_closed = True
        self._rx.set()

    def on_open_result(self, result: int) -> None:
        self.open_result = result
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
        self.failed.set()
        self._rx.set()
        return error

    # -- commands -----------------------------------------------------------------------------
    async def _run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run one AT helper; deadline and channel failures end the socket (and are reported)."""
        try:
            return await fn(*args)
        except AtTimeout as exc:  # the module is silent: the channel reported it to the supervisor
            raise self.fail(ConnectionLost(COMMAND_TIMEOUT, str(exc))) from None
        except ChannelClosed as exc:
            raise self.fail(ConnectionLost(CHANNEL_CLOSED, str(exc))) from None

    def _command_error(self, exc: AtCommandError) -> SocketError:
        if self.remote_closed and not exc.response.corrupt:  # a corrupt read is never an EOF
            return RemoteClosed(f"{exc.response.command.name} after remote close")
        return self.fail(ConnectionLost(COMMAND_ERROR, str(exc), exc.code))

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
            if self._eof:
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
                await self._rx.wait()  # a push, "closed", a failure or the switch to buffer
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
            self.push_capable and not self.remote_closed and self.failure is None
            and self.state == "open" and self.env.settings.direct_push
        )

    async def _switch_mode(self, push: bool, *, final: bool = False) -> None:
        """AT+QISWTMD=id,1|0. The protocol frames this id's recv URCs as push from before the
        switch until the socket is closed: pushes already on the line may follow the OK."""
        async with self._mode_lock:
            if self.pushing == push:
                return
            if push:
                self.env.at.channel.set_push(self.connect_id, True)
            try:
                await self._run(self.env.at.qiswtmd, self.connect_id, 1 if push else 0)
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
            self._eof = True
        return result

    async def _wait_readable(self) -> ReadResult | None:
        """Wait for a recv URC; after `reconcile_interval` without one, poll once (lost URC)."""
        with trio.move_on_after(self.env.settings.reconcile_interval):
            await self._rx.wait()
            return None
        return await self._reconcile()

    async def _reconcile(self) -> ReadResult | None:
        stats = self.env.stats
        stats.reconcile_polls += 1
        if self.env.profile.has_read_totals and self.service_type in STREAM_TYPES:
            try:
                async with self.env.scheduler.turn(self.connect_id, background=True):
                    totals = await self._run(self.env.at.qird_totals, self.connect_id)
            except AtCommandError as exc:
                error = self._command_error(exc)
                if isinstance(error, RemoteClosed):
                    return None  # the caller drains what is left and reports EOF
                raise error from None
            if totals.unread > 0:
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
            try:
                result = await self._run(self.env.at.qird, self.connect_id, length)
            except AtCommandError as exc:
                error = self._command_error(exc)
                if isinstance(error, RemoteClosed):
                    return EMPTY
                raise error from None
        size = len(result.data)
        self.bytes_received += size
        self.env.stats.bytes_received += size
        return result

    # -- send path ----------------------------------------------------------------------------
    async def send(self, data: bytes, more: Callable[[], bytes | None] | None = None) -> None:
        """Send a stream chunk as fixed-length QISENDs of at most profile.max_send bytes.

        Pipelined: while one QISEND runs, the next waits in the AT channel, guarded by the first
        one's SEND OK, so the channel writes it the moment SEND OK is parsed (one command at a
        time on the line, as the manual requires, but no task switch round trip in between). A
        chunk that is not answered SEND OK goes through `_send_chunk`'s retries; the chunks
        queued behind it are never written before it. `more()` gives the bytes the local side
        already has (None: nothing yet); they join the pipeline, so the line does not idle
        between two reads of the client."""
        chunks: deque[bytes] = deque()
        self._split(chunks, data)
        while chunks or (more is not None and self._refill(chunks, more)):
            failed, final = await self._send_pipelined(chunks, more)
            if failed is None and chunks:
                failed = chunks.popleft()  # nothing could be queued (the remote closed)
            if failed is not None:
                await self._send_chunk(failed, None, final)

    def _split(self, chunks: deque[bytes], data: bytes) -> None:
        step = self.env.profile.max_send
        view = memoryview(data)
        chunks.extend(bytes(view[offset : offset + step]) for offset in range(0, len(view), step))

    def _refill(self, chunks: deque[bytes], more: Callable[[], bytes | None]) -> bool:
        data = more()
        if not data:
            return False
        self._split(chunks, data)
        return True

    async def _send_pipelined(
        self, chunks: deque[bytes], more: Callable[[], bytes | None] | None
    ) -> tuple[bytes | None, str | None]:
        """QISEND `chunks` (and what `more` adds) in order, PIPELINE at a time, taking each chunk
        off the deque once it got SEND OK: (the first chunk that did not, its final or None when
        it was not answered) or (None, None) when the deque ran empty."""
        at, scheduler = self.env.at, self.env.scheduler
        pending: deque[tuple[Any, bytes]] = deque()
        try:
            while True:
                while len(pending) < PIPELINE and not self.remote_closed:
                    if not chunks and not (more is not None and self._refill(chunks, more)):
                        break
                    if not pending:
                        await scheduler.take(self.connect_id)
                    elif not scheduler.try_take(self.connect_id):
                        break  # never wait for a second slot while holding one
                    chunk = chunks.popleft()
                    try:
                        request = at.channel.submit(
                            at.send_command(self.connect_id, chunk),
                            after=pending[-1][0] if pending else None, after_ok=SEND_OK,
                        )
                    except BaseException as exc:
                        chunks.appendleft(chunk)
                        scheduler.release()
                        if isinstance(exc, ChannelClosed):  # the port went away: ends the socket
                            raise self.fail(ConnectionLost(CHANNEL_CLOSED, str(exc))) from None
                        raise
                    pending.append((request, chunk))
                if not pending:
                    return None, None
                request, chunk = pending.popleft()
                try:
                    response = await self._run(partial(at.channel.wait, request, check=False))
                except AtSkipped:
                    return chunk, None
                finally:
                    scheduler.release()
                if response.final not in SEND_OK or response.corrupt:
                    return chunk, "ERROR" if response.error else response.final
                self.bytes_sent += len(chunk)
                self.env.stats.bytes_sent += len(chunk)
        finally:
            while pending:  # queued behind a chunk that failed: never written; back, in order
                request, chunk = pending.pop()
                request.withdrawn = True
                scheduler.release()
                chunks.appendleft(chunk)

    async def send_datagram(self, data: bytes, remote: tuple[str, int] | None = None) -> None:
        """One datagram, one QISEND (boundaries kept); `remote` for UDP SERVICE replies."""
        if not 0 < len(data) <= self.env.profile.max_send:
            raise ValueError(f"datagram of {len(data)} bytes (1-{self.env.profile.max_send})")
        await self._send_chunk(data, remote)

    async def _send_chunk(
        self, chunk: bytes, remote: tuple[str, int] | None, first: str | None = None
    ) -> None:
        """SEND FAIL is back-pressure: wait and retry, never an error for the client. `first`:
        the module already answered this chunk so ("SEND FAIL" / "ERROR", from the pipeline)."""
        delay = SEND_BACKOFF[0]
        errors = 0
        while True:
            if first is not None:
                if first == "ERROR" and self.remote_closed:
                    raise RemoteClosed("AT+QISEND after remote close")
                ok: bool | None = None if first == "ERROR" else False
                first = None
            else:
                if self.remote_closed:
                    raise RemoteClosed()
                async with self.env.scheduler.turn(self.connect_id):
                    try:
                        ok = await self._run(self.env.at.qisend, self.connect_id, chunk, remote)
                    except AtCommandError:
                        if self.remote_closed:
                            raise RemoteClosed("AT+QISEND after remote close") from None
                        ok = None
            if ok:
                self.bytes_sent += len(chunk)
                self.env.stats.bytes_sent += len(chunk)
                return
            if ok is None:
                errors += 1
                self.env.stats.send_retries_error += 1
                if errors > SEND_ERROR_RETRIES:
                    raise self.fail(ConnectionLost(COMMAND_ERROR, "AT+QISEND kept answering ERROR"))
            else:
                errors = 0  # the module took the command: only ERRORs in a row are fatal
                self.send_fail += 1
                self.env.stats.send_fail += 1
            await trio.sleep(delay)
            delay = min(delay * 2, SEND_BACKOFF[1])

    async def query_ack(self) -> None:
        """AT+QISEND=id,0: what the remote has acknowledged (a background turn: bookkeeping
        must not queue ahead of other sockets' data)."""
        try:
            async with self.env.scheduler.turn(self.connect_id, background=True):
                ack = await self._run(self.env.at.qisend_ack, self.connect_id)
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
            "state": "remote_closed" if self.remote_closed and self.state == "open" else self.state,
        }
