"""UDP through the module: each local UDP peer owns one module "UDP" socket, datagrams stay whole.

`UdpFlow` is one peer's module socket (also used per destination by SOCKS5 UDP ASSOCIATE);
`UdpForward` is a [[forward]] with a udp: listener, creating a flow for every new source address.
A flow ends after `UDP_IDLE` seconds without traffic, or when its module socket dies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..config import ForwardConfig
from ..sockets.errors import SocketError
from ..sockets.signal import wait_any
from ..sockets.socket import ModuleSocket
from .datagrams import drop_datagram
from .endpoints import bind_udp
from .forward import guarded
from .stats import FlowStats

log = logging.getLogger("modemd.proxy")

UDP_IDLE = 120.0     # s without a datagram either way: the flow and its connect_id are released
FLOW_QUEUE = 32      # datagrams waiting for the module socket to open / take them
MAX_FLOWS = 64       # local peers per UDP forward (the connect_id pool bounds it further)
MAX_DATAGRAM = 65535
MAX_MODULE_DATAGRAM = 1460  # the largest QISEND of any family: bigger ones are dropped up front


def _oversize(size: int, limit: int) -> str:
    return f"{size} bytes, larger than the module's {limit}-byte maximum"


class UdpFlow:
    def __init__(
        self, open_socket: Callable[[], Awaitable[ModuleSocket]],
        deliver: Callable[[bytes], Awaitable[None]], flow: FlowStats, name: str,
    ) -> None:
        self._open_socket = open_socket
        self._deliver = deliver
        self.flow = flow
        self.name = name
        self._in, self._out = trio.open_memory_channel(FLOW_QUEUE)
        self.last_active = trio.current_time()
        self._scope = trio.CancelScope()

    def offer(self, data: bytes) -> None:
        """Queue a datagram for the module; dropped (and counted) when too big or the queue is full."""
        if not 0 < len(data) <= MAX_MODULE_DATAGRAM:
            drop_datagram(self.flow, "oversize", _oversize(len(data), MAX_MODULE_DATAGRAM))
            return
        try:
            self._in.send_nowait(data)
            self.last_active = trio.current_time()
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            drop_datagram(self.flow, "queue_full",
                          f"{FLOW_QUEUE} datagrams already wait for the module")

    def close(self) -> None:
        self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            try:
                msock = await self._open_socket()
            except SocketError as exc:
                self.flow.refused[exc.reason] += 1
                log.warning("%s: UDP open refused: %s", self.name, exc.detail,
                            extra={"FORWARD": self.flow.name})
                return
            self.flow.opened += 1
            self.flow.active += 1
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._up, msock, nursery.cancel_scope)
                    nursery.start_soon(self._down, msock, nursery.cancel_scope)
                    nursery.start_soon(self._idle, nursery.cancel_scope)
                    await wait_any(msock.failed, msock.lost)
                    nursery.cancel_scope.cancel()
            finally:
                self.flow.active -= 1
                self.flow.closed += 1
                await msock.aclose()

    async def _up(self, msock: ModuleSocket, scope: trio.CancelScope) -> None:
        limit = msock.env.profile.max_send
        try:
            async for data in self._out:
                if not 0 < len(data) <= limit:
                    drop_datagram(self.flow, "oversize", _oversize(len(data), limit))
                    continue
                await msock.send_datagram(data)
                self.flow.datagrams_up += 1
                self.flow.bytes_up += len(data)
        except SocketError:
            scope.cancel()

    async def _down(self, msock: ModuleSocket, scope: trio.CancelScope) -> None:
        try:
            while data := await msock.receive():
                self.last_active = trio.current_time()
                self.flow.datagrams_down += 1
                self.flow.bytes_down += len(data)
                await self._deliver(data)
        except (SocketError, OSError):
            pass
        scope.cancel()

    async def _idle(self, scope: trio.CancelScope) -> None:
        while (left := self.last_active + UDP_IDLE - trio.current_time()) > 0:
            await trio.sleep(left)
        scope.cancel()


class UdpForward:
    def __init__(self, cfg: ForwardConfig, manager: Any, flow: FlowStats) -> None:
        self.cfg = cfg
        self.manager = manager
        self.flow = flow
        self.flows: dict[Any, UdpFlow] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        sock = await bind_udp(
            cfg.listen, what=f"forward {cfg.name!r}", allow_non_loopback=cfg.allow_non_loopback
        )
        log.info("forward %s: UDP on %s -> %s", cfg.name, cfg.listen, cfg.remote,
                 extra={"FORWARD": cfg.name})
        with sock:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    try:
                        data, peer = await sock.recvfrom(MAX_DATAGRAM)
                    except OSError as exc:  # ICMP errors of earlier sends surface here
                        log.debug("forward %s: recvfrom: %s", cfg.name, exc)
                        continue
                    self._route(nursery, sock, data, peer)

    def _route(self, nursery: trio.Nursery, sock: Any, data: bytes, peer: Any) -> None:
        flow = self.flows.get(peer)
        if flow is None:
            if len(self.flows) >= MAX_FLOWS:
                drop_datagram(self.flow, "too_many_peers", f"{MAX_FLOWS} local peers already")
                return
            flow = self._new_flow(sock, peer)
            self.flows[peer] = flow
            nursery.start_soon(guarded, f"forward {self.cfg.name}", self._run_flow, peer, flow)
        flow.offer(data)

    def _new_flow(self, sock: Any, peer: Any) -> UdpFlow:
        cfg = self.cfg
        label = f"{peer[0]}:{peer[1]}"

        async def open_socket() -> ModuleSocket:
            return await self.manager.open_client(
                cfg.context_id, "UDP", cfg.remote_host, cfg.remote_port, label=cfg.name,
                local_peer=label,
            )

        async def deliver(data: bytes) -> None:
            await sock.sendto(data, peer)

        return UdpFlow(open_socket, deliver, self.flow, f"forward {cfg.name}")

    async def _run_flow(self, peer: Any, flow: UdpFlow) -> None:
        try:
            await flow.run()
        finally:
            if self.flows.get(peer) is flow:
                del self.flows[peer]
