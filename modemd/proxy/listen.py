"""A [[listen]]: a module-side TCP LISTENER or UDP SERVICE whose clients land on a local target.

The module socket lives as long as the PDP context; after the context (or the module) comes back it is
opened again. TCP: every `incoming` connection is bridged to a fresh connection to the target.
UDP SERVICE: every remote peer gets its own local UDP socket to the target, so the target's replies go
back (QISEND with address) to the peer that asked.
"""

from __future__ import annotations

import logging
import socket as pysocket
from typing import Any

import trio

from ..capabilities import listen_problem
from ..config import Endpoint, ListenConfig
from ..sockets.errors import SocketError
from ..sockets.signal import wait_any
from ..sockets.socket import ModuleSocket
from .datagrams import drop_datagram
from .forward import guarded, run_bridge
from .stats import BufferGauge, FlowStats
from .udp_forward import MAX_DATAGRAM, MAX_FLOWS, UDP_IDLE

log = logging.getLogger("modemd.proxy")

REOPEN_BACKOFF = (1.0, 60.0)  # s between failed listener opens


async def connect_target(target: Endpoint) -> trio.SocketStream:
    if target.kind == "unix":
        return await trio.open_unix_socket(target.path or "")
    host = "127.0.0.1" if target.host == "localhost" else target.host
    return await trio.open_tcp_stream(host, target.port)


class ModuleListen:
    def __init__(
        self, cfg: ListenConfig, manager: Any, flow: FlowStats, gauge: BufferGauge, linger: float
    ) -> None:
        self.cfg = cfg
        self.manager = manager
        self.flow = flow
        self.gauge = gauge
        self.linger = linger
        self.server: ModuleSocket | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing local to bind: started at once, then (re)open the module side while serving."""
        task_status.started()
        link, ctx = self.manager.link, self.cfg.context_id
        delay = REOPEN_BACKOFF[0]
        while True:
            await link.wait_serving(ctx)
            ip_type = "ipv6" if self.manager.ipv6_only(ctx) else "ipv4"
            reason = listen_problem(self.cfg, link.at.profile, ip_type, f"context {ctx}")
            if reason is not None:
                log.error("listen %s: %s; not opened", self.cfg.name, reason,
                          extra={"FORWARD": self.cfg.name})
                return
            try:
                server = await self.manager.open_server(
                    ctx, self.cfg.service_type, self.cfg.module_port, label=self.cfg.name
                )
            except SocketError as exc:
                self.flow.refused[exc.reason] += 1
                log.warning("listen %s: opening %s on module port %d failed: %s; retry in %g s",
                            self.cfg.name, self.cfg.service_type, self.cfg.module_port,
                            exc.detail, delay, extra={"FORWARD": self.cfg.name})
                await trio.sleep(delay)
                delay = min(delay * 2, REOPEN_BACKOFF[1])
                continue
            delay = REOPEN_BACKOFF[0]
            await self._serve(server)
            if not server.lost.is_set():  # it failed on its own: do not spin on re-opening
                await trio.sleep(REOPEN_BACKOFF[0])

    async def _serve(self, server: ModuleSocket) -> None:
        self.server = server
        log.info("listen %s: module port %d (%s, connect_id %d) -> %s", self.cfg.name,
                 self.cfg.module_port, self.cfg.service_type, server.connect_id, self.cfg.target,
                 extra={"CONNECT_ID": server.connect_id, "FORWARD": self.cfg.name})
        try:
            async with trio.open_nursery() as nursery:
                if self.cfg.protocol == "tcp":
                    nursery.start_soon(self._accept, server, nursery)
                else:
                    nursery.start_soon(self._datagrams, server, nursery)
                await wait_any(server.failed, server.lost)
                nursery.cancel_scope.cancel()
        finally:
            self.server = None
            await server.aclose()
        log.info("listen %s: module side gone; re-opened when the context is back", self.cfg.name,
                 extra={"FORWARD": self.cfg.name})

    # -- TCP LISTENER -------------------------------------------------------------------------
    async def _accept(self, server: ModuleSocket, nursery: trio.Nursery) -> None:
        async for incoming in server.incoming:
            nursery.start_soon(guarded, f"listen {self.cfg.name}", self._connect, incoming)

    async def _connect(self, msock: ModuleSocket) -> None:
        try:
            local = await connect_target(self.cfg.target)
        except OSError as exc:
            self.flow.refused["target_unreachable"] += 1
            log.warning("listen %s: incoming %s: target %s unreachable: %s", self.cfg.name,
                        msock.remote, self.cfg.target, exc,
                        extra={"CONNECT_ID": msock.connect_id, "FORWARD": self.cfg.name})
            await msock.aclose()
            return
        except BaseException:
            await msock.aclose()
            raise
        msock.local_peer = str(self.cfg.target)
        await run_bridge(local, msock, self.flow, self.gauge, self.linger)

    # -- UDP SERVICE --------------------------------------------------------------------------
    async def _datagrams(self, server: ModuleSocket, nursery: trio.Nursery) -> None:
        peers: dict[tuple[str, int], _ServicePeer] = {}
        try:
            while (result := await server.receive_result()).data:
                if result.remote is None:
                    drop_datagram(self.flow, "no_sender", "the module named no sender")
                    continue
                peer = peers.get(result.remote)
                if peer is None:
                    if len(peers) >= MAX_FLOWS:
                        drop_datagram(self.flow, "too_many_peers", f"{MAX_FLOWS} peers already")
                        continue
                    try:
                        peer = await _ServicePeer.open(self, server, result.remote)
                    except OSError as exc:
                        drop_datagram(self.flow, "target_unreachable", str(exc))
                        log.warning("listen %s: target %s: %s", self.cfg.name, self.cfg.target, exc)
                        continue
                    peers[result.remote] = peer
                    nursery.start_soon(guarded, f"listen {self.cfg.name}", peer.run, peers)
                await peer.forward(result.data)
        except SocketError as exc:
            log.warning("listen %s: UDP SERVICE read failed: %s", self.cfg.name, exc.detail)
        nursery.cancel_scope.cancel()


class _ServicePeer:
    """One remote peer of a UDP SERVICE: a local UDP socket to the target carries its exchange."""

    def __init__(self, listen: ModuleListen, server: ModuleSocket, remote: tuple[str, int],
                 sock: Any) -> None:
        self.listen = listen
        self.server = server
        self.remote = remote
        self.sock = sock
        self.last_active = trio.current_time()

    @classmethod
    async def open(cls, listen: ModuleListen, server: ModuleSocket,
                   remote: tuple[str, int]) -> _ServicePeer:
        target = listen.cfg.target
        host = "127.0.0.1" if target.host == "localhost" else (target.host or "127.0.0.1")
        family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
        sock = trio.socket.socket(family, pysocket.SOCK_DGRAM)
        await sock.connect((host, target.port))
        listen.flow.opened += 1
        listen.flow.active += 1
        return cls(listen, server, remote, sock)

    async def forward(self, data: bytes) -> None:
        self.last_active = trio.current_time()
        try:
            await self.sock.send(data)
            self.listen.flow.datagrams_down += 1
            self.listen.flow.bytes_down += len(data)
        except OSError as exc:
            drop_datagram(self.listen.flow, "target_unreachable", str(exc))

    async def run(self, peers: dict) -> None:
        """Replies from the target go back to this peer until it is idle for UDP_IDLE s."""
        flow = self.listen.flow
        try:
            with self.sock:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._idle, nursery.cancel_scope)
                    while True:
                        try:
                            data = await self.sock.recv(MAX_DATAGRAM)
                        except OSError:
                            continue  # ICMP port unreachable from the target: keep the peer
                        self.last_active = trio.current_time()
                        try:
                            await self.server.send_datagram(data, self.remote)
                        except ValueError:
                            limit = self.server.env.profile.max_send
                            drop_datagram(flow, "oversize", f"{len(data)} bytes, larger than the "
                                          f"module's {limit}-byte maximum")
                            continue
                        flow.datagrams_up += 1
                        flow.bytes_up += len(data)
        except SocketError:
            pass
        finally:
            flow.active -= 1
            flow.closed += 1
            if peers.get(self.remote) is self:
                del peers[self.remote]

    async def _idle(self, scope: trio.CancelScope) -> None:
        while (left := self.last_active + UDP_IDLE - trio.current_time()) > 0:
            await trio.sleep(left)
        scope.cancel()
