"""Shared pieces of the socket-layer and proxy tests: a serving modem without the supervisor,
real loopback servers, and payload checks."""

from __future__ import annotations

import hashlib
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from modemd.config import Config, ProxyConfig, SupervisorConfig, parse_config
from modemd.link import ModemLink
from modemd.proxy.proxy import Proxy
from modemd.sockets.manager import SocketManager
from tests.conftest import open_stack
from tests.ports import free_port


@dataclass
class Rig:
    stack: Any
    link: ModemLink
    manager: SocketManager
    nursery: trio.Nursery

    @property
    def emu(self) -> Any:
        return self.stack.emulator

    @property
    def at(self) -> Any:
        return self.stack.at


async def bring_up(at: Any, ip_type: str = "ipv4") -> None:
    """What the supervisor's init and PDP steps do: echo of QISEND off, family settings, QIACT."""
    profile = at.profile
    if profile.has_qisde:
        await at.run("AT+QISDE=0")
    for text in profile.init_commands:
        await at.run(text)
    if profile.has_qiact:
        await at.qicsgp(1, "internet", ip_type=ip_type)
        await at.qiact(1)
    else:
        pdp_type = {"ipv4": "IP", "ipv6": "IPV6", "ipv4v6": "IPV4V6"}[ip_type]
        await at.run(f'AT+CGDCONT=1,"{pdp_type}","internet"')
        await at.run("AT+CGACT=1,1", timeout=10)


def serve_link(
    at: Any, link: ModemLink | None = None, addresses: tuple[str, ...] = ("10.0.0.2",)
) -> ModemLink:
    link = link or ModemLink()
    link.at = at
    link.profile = at.profile
    link.context_up(1, addresses)
    return link


@asynccontextmanager
async def modem(
    family: str = "bg96", *, proxy_cfg: ProxyConfig | None = None,
    supervisor_cfg: SupervisorConfig | None = None, ip_type: str = "ipv4", **emu_kw: Any,
):
    """A booted emulator with context 1 active (of `ip_type`), a ModemLink serving it and a
    running manager."""
    emu_kw.setdefault("baud", 0)
    emu_kw.setdefault("turnaround", 0.0)
    emu_kw.setdefault("boot_delay", 0.0)
    async with open_stack(family, **emu_kw) as stack:
        await bring_up(stack.at, ip_type)
        addresses = {"ipv4": ("10.0.0.2",), "ipv6": ("2001:db8::2",),
                     "ipv4v6": ("10.0.0.2", "2001:db8::2")}[ip_type]
        link = serve_link(stack.at, addresses=addresses)
        manager = SocketManager(link, proxy_cfg or ProxyConfig(), supervisor_cfg)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            yield Rig(stack, link, manager, nursery)
            nursery.cancel_scope.cancel()


def proxy_config(toml: str = "", **proxy_kw: Any) -> Config:
    cfg = parse_config(toml or "", emulate=True)
    if proxy_kw:
        import dataclasses

        cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, **proxy_kw))
    return cfg


@asynccontextmanager
async def running_proxy(rig: Rig, cfg: Config):
    proxy = Proxy(cfg, rig.manager)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        yield proxy
        nursery.cancel_scope.cancel()


async def start_error(rig: Rig, cfg: Config) -> Exception | None:
    """The exception Proxy.run raises before it is started (None if it started)."""
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(Proxy(cfg, rig.manager).run)
        except Exception as exc:
            return exc
        nursery.cancel_scope.cancel()
    return None


# -- real loopback servers ---------------------------------------------------------------------
@dataclass
class Server:
    port: int
    received: dict[int, bytes] = field(default_factory=dict)
    connections: int = 0
    done: trio.Event = field(default_factory=trio.Event)


@asynccontextmanager
async def tcp_server(handler: Any, host: str = "127.0.0.1"):
    """A real trio TCP server on a free loopback port; `handler(stream, server)` per connection."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port = listeners[0].socket.getsockname()[1]
    server = Server(port)

    async def serve(stream: trio.SocketStream) -> None:
        server.connections += 1
        try:
            await handler(stream, server)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        yield server
        nursery.cancel_scope.cancel()


async def echo_handler(stream: trio.SocketStream, server: Server) -> None:
    async for data in stream:
        await stream.send_all(data)


async def slow_client(port: int, rcvbuf: int = 16384) -> trio.SocketStream:
    """A loopback client with a small receive buffer: when it stops reading, the proxy feels it
    at once (the kernel does not soak up megabytes first)."""
    import socket as pysocket

    sock = trio.socket.socket()
    sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


async def recv_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        data = await stream.receive_some(min(65536, n - len(buf)))
        if not data:
            break
        buf += data
    return bytes(buf)


async def recv_all(stream: trio.abc.ReceiveStream) -> bytes:
    buf = bytearray()
    while data := await stream.receive_some(65536):
        buf += data
    return bytes(buf)


def payload(size: int) -> bytes:
    """Incompressible test data."""
    return os.urandom(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def linger_reset_error(exc: BaseException) -> bool:
    """Did a local client see a connection RESET (not a clean EOF)?"""
    if isinstance(exc, trio.BrokenResourceError):
        exc = exc.__cause__ or exc
    return isinstance(exc, ConnectionResetError)


async def read_until_end(stream: trio.SocketStream, timeout: float = 60) -> tuple[bytes, str]:
    """Everything the client gets, and how it ended: "eof" (clean) or "reset" (ECONNRESET)."""
    got = bytearray()
    with trio.fail_after(timeout):
        try:
            while data := await stream.receive_some(65536):
                got += data
        except trio.BrokenResourceError as exc:
            assert linger_reset_error(exc), exc
            return bytes(got), "reset"
    return bytes(got), "eof"


__all__ = [
    "Rig", "Server", "bring_up", "echo_handler", "free_port", "linger_reset_error", "read_until_end",
    "modem", "payload", "proxy_config", "recv_all", "recv_exactly", "running_proxy", "serve_link",
    "sha", "start_error", "tcp_server",
]
