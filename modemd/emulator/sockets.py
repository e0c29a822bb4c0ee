"""Module sockets: the emulated connect_ids and the real loopback sockets behind them."""

from __future__ import annotations

import fcntl
import os
import socket as stdsocket
import struct
import termios
from collections import deque
from typing import TYPE_CHECKING

import trio

from .config import is_ip_literal, is_loopback
from .families import CLOSING, CONNECTED, LISTENING, OPENING

if TYPE_CHECKING:  # pragma: no cover
    from .session import Session

TCP = "TCP"
UDP = "UDP"
LISTENER = "TCP LISTENER"
INCOMING = "TCP INCOMING"
SERVICE = "UDP SERVICE"
SERVICE_TYPES = (TCP, UDP, LISTENER, SERVICE)

_READ_CHUNK = 65536


class RxBuffer:
    """Bounded receive buffer of one module socket: a byte stream (TCP) or datagrams (UDP)."""

    def __init__(self, cap: int, datagrams: bool) -> None:
        self.cap = cap
        self.datagrams = datagrams
        self.stream = bytearray()
        self.dgrams: deque[list] = deque()  # [bytearray, ip, port]
        self.size = 0
        self._space = trio.Event()
        self._space.set()

    @property
    def free(self) -> int:
        return max(0, self.cap - self.size)

    def put(self, data: bytes, ip: str = "", port: int = 0) -> None:
        if self.datagrams:
            self.dgrams.append([bytearray(data), ip, port])
        else:
            self.stream += data
        self.size += len(data)
        if self.size >= self.cap:
            self._space = trio.Event()

    def fits(self, n: int) -> bool:
        """A datagram of n bytes may be stored (an empty buffer takes anything)."""
        return self.size == 0 or self.size + n <= self.cap

    async def wait_space(self, n: int = 1) -> None:
        while not (self.fits(n) if self.datagrams else self.free >= n):
            await self._space.wait()

    def take(self, n: int | None) -> tuple[bytes, str, int]:
        """Remove up to n bytes (None: one whole datagram / everything)."""
        if self.datagrams:
            if not self.dgrams:
                return b"", "", 0
            head = self.dgrams[0]
            if n is None or n >= len(head[0]):
                self.dgrams.popleft()
                data = bytes(head[0])
            else:
                data = bytes(head[0][:n])
                del head[0][:n]
            ip, port = head[1], head[2]
        else:
            k = len(self.stream) if n is None else min(n, len(self.stream))
            data = bytes(self.stream[:k])
            del self.stream[:k]
            ip, port = "", 0
        self.size -= len(data)
        if data and not self._space.is_set():
            self._space.set()
        return data, ip, port

    def clear(self) -> None:
        self.stream.clear()
        self.dgrams.clear()
        self.size = 0
        self._space.set()


class ModSocket:
    """One connect_id of the emulated module."""

    def __init__(
        self,
        session: Session,
        cid: int,
        ctx: int,
        service: str,
        mode: int,
        remote_host: str,
        remote_port: int,
        local_port: int,
        server_id: int | None = None,
    ) -> None:
        self.session = session
        self.cid = cid
        self.ctx = ctx
        self.service = service
        self.mode = mode
        self.remote_host = remote_host  # as given by the host (IP or domain)
        self.remote_ip = remote_host if is_ip_literal(remote_host) else ""
        self.remote_port = remote_port
        self.local_port = local_port  # the module's port (as the host sees it)
        self.server_id = cid if server_id is None else server_id
        self.state = OPENING
        self.real: trio.SocketStream | trio.socket.SocketType | None = None
        self.real_port = 0  # real loopback port of a LISTENER / UDP SERVICE
        self.rx = RxBuffer(session.cfg.rx_buffer, datagrams=service in (UDP, SERVICE))
        # direct push in progress (Session.push_data): AT+QISWTMD=id,0 answers after it, so no
        # pushed byte follows its OK and no QIRD answer overtakes older pushed data
        self.push_busy = 0
        self.push_idle = trio.Event()
        self.push_idle.set()
        # TCP: bytes accepted by QISEND but not yet written to the real socket
        self.tx = bytearray()
        self.tx_dgrams: deque[tuple[bytes, str, int]] = deque()
        self.total_sent = 0
        self.written = 0
        self.total_recv = 0
        self.have_read = 0
        self.armed = True  # buffer mode: next arrival into an empty buffer reports "recv"
        self.full_reported = False  # BC25 "buff full" URC sent for the current fill
        self.max_clients = 1 << 30  # LISTENER: RG500U <TCP_client_maxnum>
        self.dead = False  # the real socket is gone (closed by host, peer, PDP loss, power)
        self.closed_urc_sent = False
        self.scope = trio.CancelScope()
        self._tx_ready = trio.Event()
        self._tx_drained = trio.Event()
        self._tx_drained.set()

    # ---- information ----------------------------------------------------------------------
    @property
    def is_stream(self) -> bool:
        return self.service in (TCP, INCOMING)

    def unacked(self) -> int:
        """Bytes accepted by QISEND that the peer has not got yet (module backlog + kernel queue)."""
        n = len(self.tx) + sum(len(d[0]) for d in self.tx_dgrams)
        if self.is_stream and self.real is not None and not self.dead:
            try:
                fd = self.real.socket.fileno()
                if fd >= 0:
                    buf = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
                    n += struct.unpack("i", buf)[0]
            except OSError:
                pass
        return min(n, self.total_sent)

    def tx_free(self) -> int:
        return max(0, self.session.cfg.tx_buffer - len(self.tx))

    # ---- host side ------------------------------------------------------------------------
    def queue_send(self, data: bytes, ip: str = "", port: int = 0) -> None:
        self.total_sent += len(data)
        if self.service == SERVICE:
            self.tx_dgrams.append((data, ip, port))
        elif self.service == UDP:
            self.tx_dgrams.append((data, "", 0))
        else:
            self.tx += data
        self._tx_drained = trio.Event()
        self._tx_ready.set()

    async def wait_drained(self) -> None:
        await self._tx_drained.wait()

    def read(self, n: int | None) -> tuple[bytes, str, int]:
        data, ip, port = self.rx.take(n)
        self.have_read += len(data)
        if self.rx.free:
            self.full_reported = False
        if self.rx.size == 0:
            self.armed = True
        return data, ip, port

    # ---- teardown -------------------------------------------------------------------------
    def close_real(self) -> None:
        real, self.real = self.real, None
        if real is None:
            return
        sock = real.socket if isinstance(real, trio.SocketStream) else real
        try:
            sock.close()
        except OSError:
            pass

    def kill(self) -> None:
        """Stop all activity and close the real socket now (no URC)."""
        self.dead = True
        self.scope.cancel()
        self.close_real()
        self.tx.clear()
        self.tx_dgrams.clear()
        self._tx_drained.set()

    def take_pending(self) -> None:
        """The peer closes gracefully: what it sent before its FIN (already in the real socket's
        receive queue) stays deliverable - buffered, or pushed ahead of the "closed" URC."""
        if not self.is_stream or not isinstance(self.real, trio.SocketStream) or self.dead:
            return
        fd = self.real.socket.fileno()
        session = self.session
        while True:
            try:
                data = os.read(fd, _READ_CHUNK)
            except OSError:  # BlockingIOError: nothing (more) pending
                return
            if not data:
                return
            self.total_recv += len(data)
            if self.mode == 1 and not self.rx.size:
                step = session.family.read_max
                for i in range(0, len(data), step):
                    session.urc_frame(session.push_frame(self, data[i : i + step], "", 0))
                continue
            self.rx.put(data)
            if self.armed and self.mode != 1:
                self.armed = False
                session.recv_urc(self)

    def peer_closed(self) -> None:
        """The remote end went away: state closing, one "closed" URC, unread data stays."""
        self.state = CLOSING
        if not self.closed_urc_sent:
            self.closed_urc_sent = True
            self.session.urc(f'+QIURC: "closed",{self.cid}')

    # ---- tasks ----------------------------------------------------------------------------
    def _sockopts(self, sock: trio.socket.SocketType) -> None:
        cfg = self.session.cfg
        if cfg.sock_sndbuf:
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_SNDBUF, cfg.sock_sndbuf)
        if cfg.sock_rcvbuf:
            sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_RCVBUF, cfg.sock_rcvbuf)

    async def open_task(self, ip: str | None, err: int) -> None:
        """Phase two of AT+QIOPEN: make the real socket, report +QIOPEN, then serve."""
        session = self.session
        with self.scope:
            try:
                if not err:
                    err = await self._open_real(ip)
            finally:
                if err or self.dead:
                    self.close_real()
            if self.dead and not err:
                # torn down (QICLOSE, PDP loss, power) in the very tick the connection completed:
                # whoever killed it has set its state; nothing more to report or serve
                return
            if err:
                session.lasterr = err
                session.urc(f"+QIOPEN: {self.cid},{err}")
                if session.family.failed_open_keeps_id:
                    self.state = CLOSING
                    self.dead = True
                else:
                    session.forget(self)
                return
            self.state = LISTENING if self.service == LISTENER else CONNECTED
            session.urc(f"+QIOPEN: {self.cid},0")
            await self._serve()

    async def serve_task(self) -> None:
        """Run an already connected socket (TCP INCOMING)."""
        with self.scope:
            await self._serve()

    async def _open_real(self, ip: str | None) -> int:
        fam = self.session.family
        if ip is None:
            return fam.code("dns_failed")
        if not is_loopback(ip):
            # The emulator never sends anything off this machine.
            return fam.code("connect_failed")
        af = stdsocket.AF_INET6 if ":" in ip else stdsocket.AF_INET
        self.remote_ip = ip
        if self.service in (LISTENER, SERVICE):
            kind = stdsocket.SOCK_STREAM if self.service == LISTENER else stdsocket.SOCK_DGRAM
            sock = trio.socket.socket(af, kind)
            try:
                self._sockopts(sock)
                await sock.bind((ip, 0))
                if self.service == LISTENER:
                    sock.listen(16)
            except OSError:
                sock.close()
                return fam.code("bind")
            self.real = sock
            self.real_port = sock.getsockname()[1]
            return 0
        kind = stdsocket.SOCK_STREAM if self.service == TCP else stdsocket.SOCK_DGRAM
        sock = trio.socket.socket(af, kind)
        try:
            self._sockopts(sock)
            await sock.connect((ip, self.remote_port))
        except OSError:
            sock.close()
            return fam.code("connect_failed")
        if not self.local_port:
            self.local_port = sock.getsockname()[1]
        self.real = trio.SocketStream(sock) if self.service == TCP else sock
        return 0

    async def _serve(self) -> None:
        """Run the socket's tasks on the real socket as it is now. kill() may close it (and clear
        `self.real`) at any checkpoint, even before a task first runs: each task holds its own
        reference, and a closed socket ends it quietly (kill() also cancels `self.scope`)."""
        real = self.real
        if real is None or self.dead:
            return
        async with trio.open_nursery() as nursery:
            if isinstance(real, trio.SocketStream):
                nursery.start_soon(self._stream_reader, real)
                nursery.start_soon(self._stream_writer, real)
            elif self.service == LISTENER:
                nursery.start_soon(self._accept_loop, real)
            else:
                nursery.start_soon(self._dgram_reader, real)
                nursery.start_soon(self._dgram_writer, real)

    async def _deliver(self, data: bytes, ip: str = "", port: int = 0) -> None:
        """Data from the real socket: push it (direct push) or buffer it (buffer mode)."""
        self.total_recv += len(data)
        if self.mode == 1:
            if self.rx.size:  # AT+QISWTMD's flush is still pushing the buffer: queue behind it
                self.rx.put(data, ip, port)
            else:
                await self.session.push_data(self, data, ip, port)
            return
        self.rx.put(data, ip, port)
        if self.armed:
            self.armed = False
            self.session.recv_urc(self)
        if self.rx.free == 0 and not self.full_reported and self.session.family.buff_full_urc:
            self.full_reported = True
            self.session.urc(f'+QIURC: "recv",{self.cid},"buff full"')

    async def _stream_reader(self, stream: trio.SocketStream) -> None:
        while True:
            if self.mode == 1:
                want = self.session.family.read_max
            else:
                await self.rx.wait_space()
                want = min(self.rx.free, _READ_CHUNK)
            try:
                data = await stream.receive_some(want)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                if not self.dead:
                    self.peer_closed()
                return
            await self._deliver(data)

    async def _stream_writer(self, stream: trio.SocketStream) -> None:
        while True:
            while not self.tx:
                self._tx_drained.set()
                self._tx_ready = trio.Event()
                await self._tx_ready.wait()
            chunk = bytes(self.tx[:_READ_CHUNK])
            try:
                await stream.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.tx.clear()
                self._tx_drained.set()
                if not self.dead:
                    self.peer_closed()
                return
            del self.tx[: len(chunk)]
            self.written += len(chunk)

    async def _dgram_reader(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, addr = await sock.recvfrom(65535)
            except (ConnectionRefusedError, ConnectionResetError):
                continue  # ICMP port unreachable from an earlier send
            except (OSError, trio.ClosedResourceError):
                return
            if self.mode != 1:
                await self.rx.wait_space(len(data))
            await self._deliver(data, addr[0], addr[1])

    async def _dgram_writer(self, sock: trio.socket.SocketType) -> None:
        while True:
            while not self.tx_dgrams:
                self._tx_drained.set()
                self._tx_ready = trio.Event()
                await self._tx_ready.wait()
            data, ip, port = self.tx_dgrams[0]
            try:
                if self.service == SERVICE:
                    if is_loopback(ip):
                        await sock.sendto(data, (ip, port))
                    # else: dropped - the emulator never sends anything off this machine
                else:
                    await sock.send(data)
            except (ConnectionRefusedError, ConnectionResetError):
                pass
            except (OSError, trio.ClosedResourceError):
                return
            if self.tx_dgrams:
                self.tx_dgrams.popleft()
            self.written += len(data)

    async def _accept_loop(self, sock: trio.socket.SocketType) -> None:
        session = self.session
        while True:
            try:
                conn, addr = await sock.accept()
            except (OSError, trio.ClosedResourceError):
                return
            cid = session.free_cid()
            clients = sum(
                1
                for x in session.sockets.values()
                if x.service == INCOMING and x.server_id == self.cid
            )
            if cid is None or clients >= self.max_clients:
                conn.close()
                if session.family.incoming_full_server_id:
                    session.urc(f'+QIURC: "incoming full",{self.cid}')
                else:
                    session.urc('+QIURC: "incoming full"')
                continue
            mode = self.mode if session.family.incoming_access_mode == "listener" else 0
            inc = ModSocket(
                session, cid, self.ctx, INCOMING, mode, addr[0], addr[1], self.local_port, self.cid
            )
            inc.state = CONNECTED
            inc.real = trio.SocketStream(conn)
            session.adopt(inc)
            session.urc(f'+QIURC: "incoming",{cid},{self.cid},"{addr[0]}",{addr[1]}')
            session.spawn(inc.serve_task)
