"""An IPv6 context through the real daemon stack (supervisor, socket layer, proxy) against the
emulator: `pdp.ip_type = "ipv6"`, forwards to an IPv6 literal and to a name the module resolves to
IPv6, SOCKS5 CONNECT by curl (ATYP 4 and a name), UDP ASSOCIATE answered in IPv6, and module
listeners (TCP LISTENER / UDP SERVICE) on the IPv6 context where the family has them."""

from __future__ import annotations

import ipaddress
import socket as pysocket
import struct
from contextlib import asynccontextmanager

import pytest
import trio

from modemd.config import parse_config
from modemd.emulator import Emulator, EmulatorConfig
from modemd.proxy.proxy import Proxy
from modemd.proxy.socks5_parser import (
    REP_SUCCEEDED,
    build_udp_datagram,
    encode_address,
    parse_udp_datagram,
)
from modemd.sockets.manager import SocketManager
from tests.ports import free_port
from tests.sockets_helpers import echo_handler, recv_exactly, tcp_server
from tests.supervisor_helpers import on_emulator, running

HOSTS = {"v6.test": "::1", "v4.test": "127.0.0.1"}
BODY = b"served over IPv6 " * 64


async def http_handler(stream, server) -> None:
    request = b""
    while b"\r\n\r\n" not in request:
        data = await stream.receive_some(4096)
        if not data:
            return
        request += data
    head = f"HTTP/1.0 200 OK\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
    await stream.send_all(head + BODY)


@asynccontextmanager
async def daemon_stack(family: str, ip_type: str, toml: str):
    """Emulator + Supervisor (pdp.ip_type from the config) + SocketManager + Proxy, serving."""
    emu_cfg = EmulatorConfig(family=family, hosts=HOSTS, baud=0, turnaround=0.0,
                             boot_delay=0.01, qiact_delay=0.01)
    async with Emulator.open(emu_cfg) as emu:
        cfg = parse_config(f'[pdp]\napn = "internet"\nip_type = "{ip_type}"\n{toml}', emulate=True)
        cfg = on_emulator(cfg, emu.tty_path, family)
        async with running(cfg) as (sup, link), trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await link.wait_serving(1)
            manager = SocketManager(link, cfg.proxy, cfg.supervisor)
            await nursery.start(manager.run)
            proxy = Proxy(cfg, manager)
            await nursery.start(proxy.run)
            yield emu, link, manager, proxy
            nursery.cancel_scope.cancel()


async def module_port(emu, port: int) -> int:
    """The real ::1 port behind a module server, once the proxy has opened it (+QIOPEN seen)."""
    with trio.fail_after(10):
        while True:
            try:
                return emu.module_listen_port(port)
            except LookupError:
                await trio.sleep(0.01)  # polling the emulator's table, not waiting for time


async def curl(*args: str) -> bytes:
    result = await trio.run_process(
        ["curl", "-sS", "--fail", "--max-time", "30", *args], capture_stdout=True,
        capture_stderr=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def echo_through(port: int, data: bytes) -> bytes:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(data)
        return await recv_exactly(stream, len(data))


@pytest.mark.parametrize(("family", "ip_type"), [
    ("bg95", "ipv6"), ("bg96", "ipv6"), ("rg500u", "ipv6"), ("rg500u", "ipv4v6"), ("bc25", "ipv6"),
])
async def test_ipv6_context_forwards_and_socks(family, ip_type):
    ports = {"lit": free_port(), "name": free_port(), "socks": free_port()}
    async with tcp_server(echo_handler, host="::1") as echo, \
            tcp_server(http_handler, host="::1") as web:
        toml = (
            f'[[forward]]\nname = "lit"\nlisten = "tcp:127.0.0.1:{ports["lit"]}"\n'
            f'remote = "[::1]:{echo.port}"\n'
            f'[[forward]]\nname = "name"\nlisten = "tcp:127.0.0.1:{ports["name"]}"\n'
            f'remote = "v6.test:{echo.port}"\n'
            f'[socks]\nlisten = "tcp:127.0.0.1:{ports["socks"]}"\n'
        )
        async with daemon_stack(family, ip_type, toml) as (emu, link, manager, proxy):
            # what the supervisor published from AT+QIACT? (RU IPv4v6: both addresses, D3)
            versions = sorted({ipaddress.ip_address(a).version for a in link.context(1).addresses})
            assert versions == ([6] if ip_type == "ipv6" else [4, 6])
            assert manager.ipv6_only(1) == (ip_type == "ipv6")
            data = bytes(range(256)) * 20
            assert await echo_through(ports["lit"], data) == data
            assert await echo_through(ports["name"], data) == data
            socks = f"127.0.0.1:{ports['socks']}"
            # --socks5: curl sends the IPv6 literal itself (ATYP 4)
            assert await curl("--socks5", socks, f"http://[::1]:{web.port}/") == BODY
            # --socks5-hostname: the name goes to the module, which resolves it to IPv6
            assert await curl("--socks5-hostname", socks, f"http://v6.test:{web.port}/") == BODY
            opens = [c for c in emu.commands if c.startswith("AT+QIOPEN=")]
            assert any('"::1"' in c for c in opens) and any('"v6.test"' in c for c in opens)
            if family == "bc25":  # <protocol_type> 1 for the literal and for the names alike
                assert opens and all(c.endswith(",1") for c in opens)
            assert proxy.flows["socks"].opened == 2


async def test_udp_associate_on_ipv6():
    socks_port = free_port()
    async with daemon_stack("bg95", "ipv6",
                            f'[socks]\nlisten = "tcp:[::1]:{socks_port}"\n') as stack:
        proxy = stack[3]
        remote = trio.socket.socket(pysocket.AF_INET6, pysocket.SOCK_DGRAM)
        await remote.bind(("::1", 0))
        rport = remote.getsockname()[1]

        async def echo() -> None:
            while True:
                data, addr = await remote.recvfrom(65535)
                await remote.sendto(b"echo:" + data, addr)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            client = trio.socket.socket(pysocket.AF_INET6, pysocket.SOCK_DGRAM)
            await client.bind(("::1", 0))
            control = await trio.open_tcp_stream("::1", socks_port)
            await control.send_all(b"\x05\x01\x00")
            assert await recv_exactly(control, 2) == b"\x05\x00"
            await control.send_all(b"\x05\x03\x00" + encode_address("::1", client.getsockname()[1]))
            reply = await recv_exactly(control, 4 + 16 + 2)
            assert reply[1] == REP_SUCCEEDED and reply[3] == 4  # ATYP 4: the relay is on ::1
            relay = (pysocket.inet_ntop(pysocket.AF_INET6, reply[4:20]),
                     struct.unpack("!H", reply[20:22])[0])
            for name in ("::1", "v6.test"):
                await client.sendto(build_udp_datagram(name, rport, b"dgram"), relay)
                with trio.fail_after(10):
                    data, _ = await client.recvfrom(65535)
                answer = parse_udp_datagram(data)
                assert (answer.host, answer.port, answer.payload) == (name, rport, b"echo:dgram")
            await control.aclose()
            with trio.fail_after(10):  # the association ends with its control connection
                while proxy.flows["socks"].active:
                    await trio.sleep(0.01)
            client.close()
            nursery.cancel_scope.cancel()
        remote.close()


@pytest.mark.parametrize("family", ["bg95", "rg500u"])
async def test_module_listeners_on_an_ipv6_context(family):
    target = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
    await target.bind(("127.0.0.1", 0))

    async def upper() -> None:
        while True:
            data, addr = await target.recvfrom(65535)
            await target.sendto(data.upper(), addr)

    async with tcp_server(echo_handler) as local:
        toml = (
            f'[[listen]]\nname = "tin"\nprotocol = "tcp"\nmodule_port = 2020\n'
            f'target = "tcp:127.0.0.1:{local.port}"\n'
            f'[[listen]]\nname = "uin"\nprotocol = "udp"\nmodule_port = 5683\n'
            f'target = "udp:127.0.0.1:{target.getsockname()[1]}"\n'
        )
        async with daemon_stack(family, "ipv6", toml) as (emu, link, manager, proxy), \
                trio.open_nursery() as nursery:
            nursery.start_soon(upper)
            tcp_port, udp_port = await module_port(emu, 2020), await module_port(emu, 5683)
            servers = [c for c in emu.commands if "LISTENER" in c or "SERVICE" in c]
            assert servers and all('"0:0:0:0:0:0:0:1"' in c for c in servers)  # S5 §3.7.1
            async with await trio.open_tcp_stream("::1", tcp_port) as client:
                await client.send_all(b"inbound over six")
                assert await recv_exactly(client, 16) == b"inbound over six"
            peer = trio.socket.socket(pysocket.AF_INET6, pysocket.SOCK_DGRAM)
            await peer.connect(("::1", udp_port))
            await peer.send(b"coap?")
            with trio.fail_after(10):
                assert await peer.recv(100) == b"COAP?"
            peer.close()
            assert manager.stats.accepted == 1
            nursery.cancel_scope.cancel()
    target.close()
