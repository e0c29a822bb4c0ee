"""One local stream connection <-> one module socket, closed without losing a byte.

Close paths (docs: issue 3):
- remote close: drain the module buffer to the client, shut down the client's read side (our write
  side), AT+QICLOSE, then read and discard what the client still sends until it closes (bounded by
  linger), so closing never turns into a RST that would destroy data the client has not read yet;
- local EOF: everything read was already sent; wait (bounded) for unacked to reach 0, keep delivering
  data from the remote until it closes or sends nothing for `linger` s, then AT+QICLOSE (the module
  has no half-close: the remote sees our EOF only then);
- local client gone (reset): AT+QICLOSE at once;
- module socket died (context lost, module reset, ACK rule, command deadline): RESET the client.
"""

from __future__ import annotations

import logging
import os

import trio

from ..sockets.errors import CONTEXT_LOST, ConnectionLost, RemoteClosed, SocketError
from ..sockets.signal import wait_any
from ..sockets.socket import ModuleSocket
from .endpoints import reset_stream
from .stats import BufferGauge, FlowStats

log = logging.getLogger("modemd.proxy")

REMOTE_EOF = "remote_eof"
LOCAL_EOF = "local_eof"
LOCAL_GONE = "local_gone"
FAILED = "failed"
READ_CHUNKS = 4  # read up to 4 QISEND chunks from the client at once
LOCAL_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


class Bridge:
    def __init__(
        self, local: trio.SocketStream, msock: ModuleSocket, flow: FlowStats, gauge: BufferGauge,
        linger: float,
    ) -> None:
        self.local = local
        self.msock = msock
        self.flow = flow
        self.gauge = gauge
        self.linger = linger
        self.read_size = msock.env.profile.max_send * READ_CHUNKS
        self.remote_eof = trio.Event()
        self.last_down = trio.current_time()  # the linger after a local EOF counts from here
        self.outcome: str | None = None
        self.error: SocketError | None = None
        self._scope: trio.CancelScope | None = None

    def _end(self, outcome: str, error: SocketError | None = None) -> None:
        if self.outcome is None:
            self.outcome, self.error = outcome, error
        assert self._scope is not None
        self._scope.cancel()

    async def run(self) -> str:
        """Pump until one close path applies, then carry it out; returns the outcome."""
        try:
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                nursery.start_soon(self._downstream)
                nursery.start_soon(self._upstream)
                nursery.start_soon(self._watch)
                nursery.start_soon(self._ack_rule)
        except BaseException:  # the listener stops (reload, shutdown): reset, never a clean EOF
            self.flow.resets["stopped"] += 1
            reset_stream(self.local)
            await self.msock.aclose()
            raise
        await self._finish()
        return self.outcome or FAILED

    async def _finish(self) -> None:
        if self.outcome == FAILED:
            error = self.error
            self.flow.resets[error.reason if error else "unknown"] += 1
            log.warning("%s: connect_id %d to %s lost (%s): resetting local client %s",
                        self.flow.name, self.msock.connect_id, self.msock.remote,
                        error.detail if error else "?", self.msock.local_peer,
                        extra={"CONNECT_ID": self.msock.connect_id, "FORWARD": self.flow.name})
            reset_stream(self.local)
            await self.msock.aclose()
            return
        try:
            await self.msock.aclose()
            if self.outcome == REMOTE_EOF:
                await self._discard_local()
        finally:
            await self.local.aclose()

    async def _discard_local(self) -> None:
        """After our EOF: read what the client still sends until it closes, at most `linger` s."""
        with trio.move_on_after(self.linger):
            try:
                while await self.local.receive_some(65536):
                    pass
            except LOCAL_ERRORS:
                pass

    def _deliver_nowait(self, data: bytes) -> int:
        """Pushed data straight from the AT reader to the client while `_downstream` waits with
        nothing queued: what the client's socket takes now (0: `_downstream` sends it, and
        raises the error, if any)."""
        try:
            sent = os.write(self.local.socket.fileno(), data)
        except OSError:  # full (EAGAIN), or the client is gone: the task's send_all tells
            return 0
        self.flow.bytes_down += sent
        self.last_down = trio.current_time()
        return sent

    async def _downstream(self) -> None:
        """Module -> client, one QIRD at a time: a slow client throttles the remote's window.
        Pushed data usually bypasses this task (`_deliver_nowait`); it sends what the client's
        socket did not take at once, buffer-mode reads, and the EOF."""
        self.msock.deliver_nowait = self._deliver_nowait
        try:
            while data := await self.msock.receive():
                self.gauge.add(len(data))
                try:
                    await self.local.send_all(data)
                finally:
                    self.gauge.sub(len(data))
                self.flow.bytes_down += len(data)
                self.last_down = trio.current_time()
            await self.local.send_eof()
        except LOCAL_ERRORS:
            return self._end(LOCAL_GONE)
        except SocketError as exc:
            return self._end(FAILED, exc)
        finally:
            self.msock.deliver_nowait = None
        self.remote_eof.set()
        self._end(REMOTE_EOF)

    async def _upstream(self) -> None:
        """Client -> module. One task reads the client (stopping while the module's unacked
        window is full), the other sends; the sender takes what was read meanwhile into its
        QISEND chain, so the line stays busy across reads. At most one read waits between
        them (a rendezvous channel): memory stays at two reads per connection."""
        send_ch, recv_ch = trio.open_memory_channel[bytes](0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_local, send_ch)
            if not await self._send_local(recv_ch):
                return
        try:
            await self.msock.flush(self.linger)
            self.last_down = trio.current_time()
            await self._linger()
        except LOCAL_ERRORS:
            return self._end(LOCAL_GONE)
        except SocketError as exc:
            return self._end(FAILED, exc)
        self._end(LOCAL_EOF)

    async def _read_local(self, send_ch: trio.MemorySendChannel[bytes]) -> None:
        async with send_ch:  # closing it is the client's EOF for the sender
            try:
                while True:
                    await self.msock.wait_send_room()
                    data = await self.local.receive_some(self.read_size)
                    if not data:
                        return
                    self.gauge.add(len(data))
                    try:
                        await send_ch.send(data)
                    except BaseException:  # never handed over: not in our buffers any more
                        self.gauge.sub(len(data))
                        raise
            except LOCAL_ERRORS:
                self._end(LOCAL_GONE)
            except SocketError as exc:
                self._end(FAILED, exc)

    async def _send_local(self, recv_ch: trio.MemoryReceiveChannel[bytes]) -> bool:
        """Send until the client's EOF (True); False when the bridge ends another way."""
        held = [0]                          # taken from the reader, not yet answered SEND OK
        mark = [self.msock.bytes_sent]

        def settle() -> None:
            done, mark[0] = self.msock.bytes_sent - mark[0], self.msock.bytes_sent
            held[0] -= done
            self.gauge.sub(done)
            self.flow.bytes_up += done

        def more() -> bytes | None:
            settle()
            try:
                data = recv_ch.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return None
            held[0] += len(data)
            return data

        try:
            async for data in recv_ch:
                held[0] += len(data)
                try:
                    await self.msock.send(data, more)
                finally:
                    settle()
        except RemoteClosed:
            await trio.sleep_forever()  # the downstream drains and ends the bridge
        except SocketError as exc:
            self._end(FAILED, exc)
            return False
        finally:
            self.gauge.sub(held[0])  # never sent (the bridge ends): not held any more either
            held[0] = 0
        return True

    async def _linger(self) -> None:
        """After the client's EOF: the remote may still answer; give up after `linger` idle s."""
        while True:
            with trio.move_on_at(self.last_down + self.linger):
                await self.remote_eof.wait()
                return
            if trio.current_time() >= self.last_down + self.linger:
                return

    async def _watch(self) -> None:
        await wait_any(self.msock.failed, self.msock.lost)
        self._end(FAILED, self.msock.failure or ConnectionLost(
            CONTEXT_LOST, f"context {self.msock.context_id} lost"
        ))

    async def _ack_rule(self) -> None:
        try:
            await self.msock.ack_watchdog()
        except SocketError as exc:
            self._end(FAILED, exc)
