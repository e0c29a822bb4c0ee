"""The SOCKS5 server end to end: curl, a Python client, UDP ASSOCIATE and every reply code."""

from __future__ import annotations

import socket as pysocket
import struct

import pytest
import trio

from modemd.proxy.socks5_parser import (
    REP_ADDRESS_TYPE_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_CONNECTION_REFUSED,
    REP_HOST_UNREACHABLE,
    REP_NETWORK_UNREACHABLE,
    REP_SUCCEEDED,
    REP_TTL_EXPIRED,
    build_udp_datagram,
    encode_address,
    parse_udp_datagram,
)
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    modem,
    payload,
    proxy_config,
    recv_exactly,
    running_proxy,
    sha,
    tcp_server,
)

HOSTS = {"files.test": "127.0.0.1", "v6.test": "::1", "localhost": "127.0.0.1"}


def socks_toml(port: int, extra: str = "") -> str:
    return f'[socks]\nlisten = "tcp:127.0.0.1:{port}"\n{extra}\n'


async def socks_connect(port: int, request: bytes) -> tuple[trio.SocketStream, int]:
    """Greeting + raw request; returns the stream and the reply code."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x05\x01\x00")
    assert await recv_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(request)
    head = await recv_exactly(stream, 4)
    assert head[0] == 5, head
    atyp = head[3]
    size = {1: 4, 4: 16}.get(atyp)
    if size is None:
        size = (await recv_exactly(stream, 1))[0]
    await recv_exactly(stream, size + 2)
    return stream, head[1]


def connect_request(host: str, port: int) -> bytes:
    return b"\x05\x01\x00" + encode_address(host, port)


async def http_file_server(body: bytes):
    async def handler(stream, server):
        request = b""
        while b"\r\n\r\n" not in request:
            data = await stream.receive_some(4096)
            if not data:
                return
            request += data
        server.received[server.connections] = request
        head = (
            f"HTTP/1.0 200 OK\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        await stream.send_all(head + body)

    return tcp_server(handler)


async def test_curl_socks5_hostname_fetches_a_file(tmp_path):
    body = payload(1_500_000)
    async with modem(hosts=HOSTS) as rig, await http_file_server(body) as web:
        port = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))) as proxy:
            out = tmp_path / "file.bin"
            result = await trio.run_process(
                ["curl", "-sS", "--fail", "--max-time", "60", "--socks5-hostname",
                 f"127.0.0.1:{port}", f"http://files.test:{web.port}/file.bin", "-o", str(out)],
                capture_stderr=True, check=False,
            )
            assert result.returncode == 0, result.stderr
            assert sha(out.read_bytes()) == sha(body)
            assert b"Host: files.test" in web.received[1]
            # the name went to the module as-is: the module resolved it
            assert any('"files.test"' in c for c in rig.emu.commands)
            assert proxy.flows["socks"].opened == 1


async def test_curl_reports_unknown_host(tmp_path):
    async with modem(hosts=HOSTS) as rig:
        port = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))) as proxy:
            result = await trio.run_process(
                ["curl", "-sS", "--max-time", "20", "--socks5-hostname", f"127.0.0.1:{port}",
                 "http://nowhere.test/"],
                capture_stderr=True, check=False,
            )
            assert result.returncode != 0
            assert proxy.flows["socks"].refused["dns_failed"] == 1


@pytest.mark.parametrize("target", ["ipv4", "ipv6", "name"])
async def test_connect_address_types(target):
    host = {"ipv4": "127.0.0.1", "ipv6": "::1", "name": "v6.test"}[target]
    server_host = "127.0.0.1" if target == "ipv4" else "::1"
    async with modem(hosts=HOSTS, ip_type="ipv4v6") as rig, tcp_server(echo_handler, host=server_host) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))):
            stream, code = await socks_connect(port, connect_request(host, server.port))
            assert code == REP_SUCCEEDED
            data = payload(100_000)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, data)
                assert sha(await recv_exactly(stream, len(data))) == sha(data)
            await stream.aclose()


async def test_early_data_before_reply_is_kept():
    async with modem() as rig, tcp_server(echo_handler) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(
                b"\x05\x01\x00" + connect_request("127.0.0.1", server.port) + b"early bytes"
            )
            reply = await recv_exactly(stream, 2 + 10)
            assert reply == b"\x05\x00" + b"\x05\x00\x00\x01" + bytes(6)
            assert await recv_exactly(stream, 11) == b"early bytes"
            await stream.aclose()


async def test_reply_codes(caplog):
    async with modem(hosts=HOSTS) as rig:
        port = free_port()
        dead = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))) as proxy:
            cases = [
                (connect_request("nowhere.test", 80), REP_HOST_UNREACHABLE),
                (connect_request("127.0.0.1", dead), REP_CONNECTION_REFUSED),
                (b"\x05\x02\x00" + encode_address("127.0.0.1", 80), REP_COMMAND_NOT_SUPPORTED),
                (b"\x05\x01\x00\x07\x00\x50", REP_ADDRESS_TYPE_NOT_SUPPORTED),
                (b"\x05\x01\x00\x03\x09bad_name!\x00\x50", REP_HOST_UNREACHABLE),
            ]
            for request, expected in cases:
                stream, code = await socks_connect(port, request)
                assert code == expected, request
                assert await stream.receive_some(10) == b""  # then the server closes
                await stream.aclose()
            rig.link.context_down(1)
            stream, code = await socks_connect(port, connect_request("127.0.0.1", 80))
            assert code == REP_NETWORK_UNREACHABLE
            await stream.aclose()
            assert proxy.flows["socks"].refused["bad_request"] == 3
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert "566 socket_connect_failed" in caplog.text


async def test_open_timeout_replies_ttl_expired(mock_clock):
    blocker = pysocket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    filler = pysocket.socket()
    filler.connect(blocker.getsockname())
    try:
        async with modem() as rig:
            port = free_port()
            async with running_proxy(rig, proxy_config(socks_toml(port))):
                stream, code = await socks_connect(
                    port, connect_request("127.0.0.1", blocker.getsockname()[1])
                )
                assert code == REP_TTL_EXPIRED
                await stream.aclose()
    finally:
        filler.close()
        blocker.close()


async def test_not_socks_and_no_method_are_closed():
    async with modem() as rig:
        port = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))):
            async with await trio.open_tcp_stream("127.0.0.1", port) as s:
                await s.send_all(b"GET / HTTP/1.0\r\n\r\n")
                assert await s.receive_some(10) == b""
            async with await trio.open_tcp_stream("127.0.0.1", port) as s:
                await s.send_all(b"\x05\x01\x02")  # username/password only
                assert await recv_exactly(s, 2) == b"\x05\xff"
                assert await s.receive_some(10) == b""


async def test_handshake_timeout_and_max_clients(mock_clock):
    async with modem() as rig:
        port = free_port()
        toml = socks_toml(port, "handshake_timeout = 5.0\nmax_clients = 2")
        async with running_proxy(rig, proxy_config(toml)) as proxy:
            start = trio.current_time()
            idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
            await trio.sleep(0.1)
            extra = await trio.open_tcp_stream("127.0.0.1", port)
            with pytest.raises(trio.BrokenResourceError):
                await extra.receive_some(10)
            assert proxy.flows["socks"].refused["max_clients"] == 1
            for s in idle:
                assert await s.receive_some(10) == b""
            assert 4.9 <= trio.current_time() - start <= 6
            for s in [*idle, extra]:
                await s.aclose()


async def test_udp_associate_round_trip():
    async with modem(hosts=HOSTS) as rig:
        remote = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
        await remote.bind(("127.0.0.1", 0))
        rport = remote.getsockname()[1]

        async def echo() -> None:
            while True:
                data, addr = await remote.recvfrom(65535)
                await remote.sendto(b"echo:" + data, addr)

        port = free_port()
        async with running_proxy(rig, proxy_config(socks_toml(port))) as proxy, \
                trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            client = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
            await client.bind(("127.0.0.1", 0))
            cport = client.getsockname()[1]
            control, code = await socks_udp_associate(port, cport)
            assert code == REP_SUCCEEDED
            relay = control.relay
            for name in ("127.0.0.1", "files.test"):
                for size in (1, 500, 1400):
                    await client.sendto(build_udp_datagram(name, rport, b"u" * size), relay)
                    with trio.fail_after(10):
                        data, addr = await client.recvfrom(65535)
                    assert addr == relay
                    reply = parse_udp_datagram(data)
                    assert (reply.host, reply.port) == (name, rport)
                    assert reply.payload == b"echo:" + b"u" * size
            assert proxy.flows["socks"].opened == 2  # one module socket per destination
            await control.aclose()
            with trio.fail_after(5):
                while proxy.flows["socks"].active:
                    await trio.sleep(0.01)
            client.close()
            nursery.cancel_scope.cancel()
        remote.close()


async def socks_udp_associate(port: int, client_port: int):
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x05\x01\x00")
    assert await recv_exactly(stream, 2) == b"\x05\x00"
    await stream.send_all(b"\x05\x03\x00" + encode_address("127.0.0.1", client_port))
    reply = await recv_exactly(stream, 10)
    assert reply[3] == 1
    stream.relay = (pysocket.inet_ntoa(reply[4:8]), struct.unpack("!H", reply[8:10])[0])
    return stream, reply[1]
