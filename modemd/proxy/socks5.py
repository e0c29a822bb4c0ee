"""SOCKS5 server (RFC 1928, no authentication): CONNECT and UDP ASSOCIATE through the module.

Host names go to the module as they are (like `curl --socks5-hostname`): the module resolves them.
The module's result codes map to reply codes by their canonical names, so every family gets the same
answers although the numbers differ (seeds §5.1). A bad request ends with the right reply and one log
line, never a traceback.
"""

from __future__ import annotations

import logging
import socket as pysocket
from typing import Any

import trio

from ..config import SocksConfig
from ..sockets import errors as E
from ..sockets.socket import ModuleSocket
from .datagrams import drop_datagram
from .endpoints import bind_stream, peer_name, reset_stream
from .forward import accept_loop, guarded, run_bridge
from .socks5_parser import (
    CMD_CONNECT,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NETWORK_UNREACHABLE,
    REP_SUCCEEDED,
    REP_TTL_EXPIRED,
    REPLY_TEXT,
    Failure,
    Greeting,
    Request,
    Socks5Parser,
    build_method_choice,
    build_reply,
    build_udp_datagram,
    parse_udp_datagram,
)
from .stats import BufferGauge, FlowStats
from .udp_forward import MAX_DATAGRAM, UdpFlow

log = logging.getLogger("modemd.proxy")

REPLY_BY_REASON = {
    "dns_failed": REP_HOST_UNREACHABLE,
    "dns_busy": REP_HOST_UNREACHABLE,
    "invalid_ip_address": REP_HOST_UNREACHABLE,
    E.INVALID_HOST: REP_HOST_UNREACHABLE,
    "socket_connect_failed": REP_CONNECTION_REFUSED,
    "connection_reset": REP_CONNECTION_REFUSED,
    "socket_closed": REP_CONNECTION_REFUSED,
    "pdp_broken": REP_NETWORK_UNREACHABLE,
    "pdp_activate_failed": REP_NETWORK_UNREACHABLE,
    "pdp_deactivate_failed": REP_NETWORK_UNREACHABLE,
    "pdp_activating": REP_NETWORK_UNREACHABLE,
    "apn_not_configured": REP_NETWORK_UNREACHABLE,
    E.NOT_SERVING: REP_NETWORK_UNREACHABLE,
    E.CONTEXT_LOST: REP_NETWORK_UNREACHABLE,
    E.CHANNEL_CLOSED: REP_NETWORK_UNREACHABLE,
    "operation_timeout": REP_TTL_EXPIRED,
    E.OPEN_TIMEOUT: REP_TTL_EXPIRED,
}
MAX_DESTINATIONS = 8  # module sockets one UDP association may hold


def reply_code(reason: str) -> int:
    """The SOCKS5 reply for a canonical failure reason (general failure when nothing fits)."""
    return REPLY_BY_REASON.get(reason, REP_GENERAL_FAILURE)


class Socks5Server:
    def __init__(
        self, cfg: SocksConfig, context_id: int, manager: Any, flow: FlowStats,
        gauge: BufferGauge, linger: float,
    ) -> None:
        self.cfg = cfg
        self.context_id = context_id
        self.manager = manager
        self.flow = flow
        self.gauge = gauge
        self.linger = linger
        self.clients = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        listener, unix_file = await bind_stream(
            cfg.listen, what="socks", mode=cfg.mode, gid=cfg.gid,
            allow_non_loopback=cfg.allow_non_loopback,
        )
        log.info("socks: listening on %s", cfg.listen, extra={"FORWARD": "socks"})
        try:
            async with listener, trio.open_nursery() as nursery:
                task_status.started()
                await accept_loop(listener, nursery, self._client, "socks")
        finally:
            if unix_file is not None:
                unix_file.remove()

    async def _client(self, stream: trio.SocketStream) -> None:
        if self.clients >= self.cfg.max_clients:
            self.flow.refused["max_clients"] += 1
            log.warning("socks: %d clients already; refusing %s", self.clients, peer_name(stream))
            reset_stream(stream)
            return
        self.clients += 1
        try:
            await self._serve(stream)
        finally:
            self.clients -= 1

    async def _serve(self, stream: trio.SocketStream) -> None:
        peer = peer_name(stream)
        parser = Socks5Parser()
        request: Request | None = None
        with trio.move_on_after(self.cfg.handshake_timeout) as scope:
            try:
                request = await self._handshake(stream, parser, peer)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                request = None
        if scope.cancelled_caught:
            log.info("socks: %s: no complete request within %g s", peer, self.cfg.handshake_timeout)
        if request is None:
            await stream.aclose()
            return
        if request.command == CMD_CONNECT:
            await self._connect(stream, request, parser.leftover, peer)
        else:
            await UdpAssociation(self, stream, request, peer).run()

    async def _handshake(
        self, stream: trio.SocketStream, parser: Socks5Parser, peer: str
    ) -> Request | None:
        while True:
            event = parser.next_event()
            if event is None:
                data = await stream.receive_some(512)
                if not data:
                    return None
                parser.feed(data)
            elif isinstance(event, Greeting):
                await stream.send_all(build_method_choice(event))
                if not event.no_auth:
                    log.info("socks: %s offers no no-auth method; refused", peer)
                    return None
            elif isinstance(event, Failure):
                if event.code is not None:
                    await stream.send_all(build_reply(event.code))
                self.flow.refused["bad_request"] += 1
                log.info("socks: %s: bad request: %s%s", peer, event.reason,
                         "" if event.code is None else f" (reply 0x{event.code:02x})")
                return None
            else:
                return event

    async def _connect(
        self, stream: trio.SocketStream, request: Request, early: bytes, peer: str
    ) -> None:
        target = f"{request.host}:{request.port}"
        try:
            msock = await self.manager.open_client(
                self.context_id, "TCP", request.host, request.port, label="socks",
                local_peer=peer,
            )
        except E.SocketError as exc:
            await self._refuse(stream, peer, target, exc)
            return
        except BaseException:
            reset_stream(stream)
            raise
        try:
            await stream.send_all(build_reply(REP_SUCCEEDED))
            if early:  # the client sent data before our reply: it goes first
                await msock.send(early)
        except (trio.BrokenResourceError, trio.ClosedResourceError, E.SocketError):
            await msock.aclose()
            await stream.aclose()
            return
        except BaseException:
            reset_stream(stream)
            await msock.aclose()
            raise
        await run_bridge(stream, msock, self.flow, self.gauge, self.linger)

    async def _refuse(
        self, stream: trio.SocketStream, peer: str, target: str, exc: E.SocketError
    ) -> None:
        code = reply_code(exc.reason)
        self.flow.refused[exc.reason] += 1
        log.warning("socks: %s CONNECT %s failed: %s -> reply 0x%02x %s", peer, target,
                    exc.detail, code, REPLY_TEXT[code], extra={"FORWARD": "socks"})
        try:
            await stream.send_all(build_reply(code))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await stream.aclose()


class UdpAssociation:
    """UDP ASSOCIATE: a loopback relay socket; each destination gets its own module UDP socket.

    The association lives as long as its TCP control connection (RFC 1928 §7). Datagrams are taken
    only from the client's address (its IP; the port once known), never from anyone else.
    """

    def __init__(self, server: Socks5Server, stream: trio.SocketStream, request: Request,
                 peer: str) -> None:
        self.server = server
        self.stream = stream
        self.request = request
        self.peer = peer
        self.client_addr: Any = None
        self.flows: dict[tuple[str, int], UdpFlow] = {}

    async def run(self) -> None:
        relay = await self._bind_relay()
        with relay:
            host, port = relay.getsockname()[:2]
            try:
                await self.stream.send_all(build_reply(REP_SUCCEEDED, host, port))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            log.info("socks: %s UDP ASSOCIATE relay %s:%d", self.peer, host, port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relay, relay, nursery)
                await self._control_ends()
                nursery.cancel_scope.cancel()
        await self.stream.aclose()

    async def _bind_relay(self) -> Any:
        ep = self.server.cfg.listen
        host = ep.host if ep.kind == "tcp" and ep.host not in (None, "localhost") else "127.0.0.1"
        family = pysocket.AF_INET6 if ":" in host else pysocket.AF_INET
        sock = trio.socket.socket(family, pysocket.SOCK_DGRAM)
        await sock.bind((host, 0))
        return sock

    async def _control_ends(self) -> None:
        """The association ends when the client closes (or resets) the TCP connection."""
        try:
            while await self.stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _from_client(self, addr: Any) -> bool:
        if self.client_addr is not None:
            return addr == self.client_addr
        expected_ip = self.peer.rsplit(":", 1)[0].strip("[]") if ":" in self.peer else None
        if expected_ip and addr[0] != expected_ip and self.server.cfg.listen.kind == "tcp":
            return False
        if self.request.port and addr[1] != self.request.port:
            return False
        self.client_addr = addr
        return True

    async def _relay(self, relay: Any, nursery: trio.Nursery) -> None:
        flow = self.server.flow
        while True:
            data, addr = await relay.recvfrom(MAX_DATAGRAM)
            if not self._from_client(addr):
                drop_datagram(flow, "foreign_sender", f"from {addr[0]}, not the associated client")
                continue
            parsed = parse_udp_datagram(data)
            if isinstance(parsed, Failure):
                drop_datagram(flow, "malformed", f"from {self.peer}: {parsed.reason}")
                continue
            key = (parsed.host, parsed.port)
            udp = self.flows.get(key)
            if udp is None:
                if len(self.flows) >= MAX_DESTINATIONS:
                    drop_datagram(flow, "too_many_peers", f"{MAX_DESTINATIONS} destinations already")
                    continue
                udp = self._new_flow(relay, key)
                self.flows[key] = udp
                nursery.start_soon(guarded, "socks", self._run_flow, key, udp)
            udp.offer(parsed.payload)

    def _new_flow(self, relay: Any, key: tuple[str, int]) -> UdpFlow:
        host, port = key
        server = self.server

        async def open_socket() -> ModuleSocket:
            return await server.manager.open_client(
                server.context_id, "UDP", host, port, label="socks", local_peer=self.peer
            )

        async def deliver(data: bytes) -> None:
            await relay.sendto(build_udp_datagram(host, port, data), self.client_addr)

        return UdpFlow(open_socket, deliver, server.flow, f"socks {self.peer} -> {host}:{port}")

    async def _run_flow(self, key: tuple[str, int], udp: UdpFlow) -> None:
        try:
            await udp.run()
        finally:
            if self.flows.get(key) is udp:
                del self.flows[key]
