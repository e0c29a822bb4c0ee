"""Real clients through the proxy, the emulator on a real pty, and real loopback servers."""

from __future__ import annotations

import grp
import hashlib
import os
import socket as pysocket
import stat

import pytest
import trio

from modemd.proxy.endpoints import EndpointError
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    linger_reset_error,
    modem,
    payload,
    proxy_config,
    recv_all,
    recv_exactly,
    running_proxy,
    sha,
    start_error,
    tcp_server,
)

BIG = 20 * 1024 * 1024


def forward_toml(name: str, listen: str, remote_port: int, extra: str = "") -> str:
    return (
        f'[[forward]]\nname = "{name}"\nlisten = "{listen}"\n'
        f'remote = "127.0.0.1:{remote_port}"\n{extra}\n'
    )


async def duplex_server(stream: trio.SocketStream, server) -> None:
    """Sends BIG bytes while it hashes everything it receives; closes after the client's EOF."""
    data = server.data

    async def send() -> None:
        view = memoryview(data)
        for i in range(0, len(view), 262144):
            await stream.send_all(view[i : i + 262144])

    h = hashlib.sha256()
    n = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        while chunk := await stream.receive_some(262144):
            h.update(chunk)
            n += len(chunk)
    server.received[0] = h.hexdigest().encode()
    server.received[1] = str(n).encode()
    server.done.set()


async def test_tcp_forward_20mb_each_way():
    down, up = payload(BIG), payload(BIG)
    async with modem() as rig, tcp_server(duplex_server) as server:
        server.data = down
        port = free_port()
        cfg = proxy_config(
            forward_toml("bulk", f"tcp:127.0.0.1:{port}", server.port), linger_seconds=0.5
        )
        async with running_proxy(rig, cfg) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = hashlib.sha256()
            count = 0

            async def send() -> None:
                view = memoryview(up)
                for i in range(0, len(view), 262144):
                    await client.send_all(view[i : i + 262144])
                await client.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while chunk := await client.receive_some(262144):
                    got.update(chunk)
                    count += len(chunk)
            await client.aclose()
            await server.done.wait()
            assert count == BIG
            assert got.hexdigest() == sha(down)
            assert server.received[0].decode() == sha(up)
            flow = proxy.flows["bulk"]
            assert flow.bytes_up == BIG and flow.bytes_down == BIG
            assert proxy.gauge.peak <= (2 * 4 + 1) * 1460 + 1500  # a read waiting, one in the QISEND pipeline, one QIRD
            with trio.fail_after(5):
                while rig.manager.ids_in_use:
                    await trio.sleep(0.01)


async def test_twelve_connections_at_once():
    size = 300_000

    async def handler(stream, server):
        data = await recv_exactly(stream, size)
        await stream.send_all(hashlib.sha256(data).digest() + data[::-1])

    async with modem() as rig, tcp_server(handler) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("many", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            results: dict[int, bool] = {}

            async def one(i: int) -> None:
                data = payload(size)
                async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(client.send_all, data)
                        answer = await recv_exactly(client, 32 + size)
                digest_ok = answer[:32] == hashlib.sha256(data).digest()
                results[i] = digest_ok and answer[32:] == data[::-1]

            async with trio.open_nursery() as nursery:
                for i in range(12):
                    nursery.start_soon(one, i)
                with trio.fail_after(60):
                    while rig.manager.ids_in_use < 12 and len(results) < 12:
                        await trio.sleep(0.005)
                peak_ids = rig.manager.ids_in_use
            assert results == {i: True for i in range(12)}
            assert peak_ids == 12
            assert proxy.flows["many"].opened == 12
            assert rig.manager.stats.open_failed == {}


async def test_unix_forward_with_socat(tmp_path):
    path = str(tmp_path / "echo.sock")
    data = payload(200_000)
    (tmp_path / "in.bin").write_bytes(data)
    group = other_group()
    async with modem() as rig, tcp_server(echo_handler) as server:
        toml = forward_toml(
            "echo", f"unix:{path}", server.port, f'mode = "0660"\ngroup = "{group.gr_name}"'
        )
        async with running_proxy(rig, proxy_config(toml, linger_seconds=0.3)):
            st = os.stat(path)
            assert stat.S_IMODE(st.st_mode) == 0o660
            assert stat.S_ISSOCK(st.st_mode)
            assert st.st_gid == group.gr_gid
            result = await trio.run_process(
                ["socat", "-t", "5", "-", f"UNIX-CONNECT:{path}"],
                stdin=data, capture_stdout=True, capture_stderr=True,
            )
            assert sha(result.stdout) == sha(data)
        assert not os.path.exists(path)  # removed with the listener


def other_group() -> grp.struct_group:
    """A group the socket file can be given: another one as root, else our own."""
    if os.geteuid() == 0:
        for name in ("daemon", "nogroup", "bin"):
            try:
                return grp.getgrnam(name)
            except KeyError:
                continue
    return grp.getgrgid(os.getgid())


async def test_stale_unix_socket_is_replaced_but_live_one_is_not(tmp_path):
    path = str(tmp_path / "fwd.sock")
    stale = pysocket.socket(pysocket.AF_UNIX)
    stale.bind(path)
    stale.close()  # a file nobody listens on
    async with modem() as rig, tcp_server(echo_handler) as server:
        toml = forward_toml("a", f"unix:{path}", server.port)
        async with running_proxy(rig, proxy_config(toml)):
            async with await trio.open_unix_socket(path) as client:
                await client.send_all(b"ping")
                assert await recv_exactly(client, 4) == b"ping"
            error = await start_error(rig, proxy_config(toml))
            assert isinstance(error, EndpointError) and "in use" in str(error)
        regular = tmp_path / "file"
        regular.write_text("x")
        error = await start_error(rig, proxy_config(forward_toml("b", f"unix:{regular}", 1)))
        assert isinstance(error, EndpointError) and "not a socket" in str(error)
        assert regular.read_text() == "x"


async def test_udp_forward_round_trip_keeps_datagrams():
    async with modem() as rig:
        remote = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
        await remote.bind(("127.0.0.1", 0))
        rport = remote.getsockname()[1]

        async def echo() -> None:
            while True:
                data, addr = await remote.recvfrom(65535)
                await remote.sendto(b"re:" + data, addr)

        port = free_port(pysocket.SOCK_DGRAM)
        cfg = proxy_config(forward_toml("dns", f"udp:127.0.0.1:{port}", rport))
        async with running_proxy(rig, cfg) as proxy, trio.open_nursery() as nursery:
            nursery.start_soon(echo)
            clients = []
            for _ in range(2):
                c = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
                await c.connect(("127.0.0.1", port))
                clients.append(c)
            sizes = [1, 100, 1000, 1400]
            for i, c in enumerate(clients):
                for size in sizes:
                    await c.send(bytes([i]) * size)
            for i, c in enumerate(clients):
                with trio.fail_after(10):
                    got = [await c.recv(65535) for _ in sizes]
                assert sorted(got, key=len) == [b"re:" + bytes([i]) * s for s in sizes]
            assert proxy.flows["dns"].opened == 2  # one module socket per local peer
            assert proxy.flows["dns"].datagrams_down == 8
            for c in clients:
                c.close()
            nursery.cancel_scope.cancel()
        remote.close()


async def test_oversize_datagrams_are_counted_logged_once_and_exported(caplog):
    """A datagram over the family's QISEND maximum cannot be sent: it is dropped, counted by
    reason in modemd_datagrams_dropped_total, and logged (at most one line a minute)."""
    import logging
    from types import SimpleNamespace

    from modemd.metrics import Metrics
    from modemd.metrics_provider import _data_path

    async with modem() as rig:
        remote = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
        await remote.bind(("127.0.0.1", 0))
        port = free_port(pysocket.SOCK_DGRAM)
        cfg = proxy_config(forward_toml("dns", f"udp:127.0.0.1:{port}", remote.getsockname()[1]))
        async with running_proxy(rig, cfg) as proxy:
            client = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
            await client.connect(("127.0.0.1", port))
            with caplog.at_level(logging.WARNING, logger="modemd.proxy"):
                for _ in range(3):
                    await client.send(b"x" * 2000)
                await client.send(b"fits")
                with trio.fail_after(10):
                    assert (await remote.recvfrom(65535))[0] == b"fits"  # the flow goes on
            assert proxy.flows["dns"].datagrams_dropped == {"oversize": 3}
            lines = [r.getMessage() for r in caplog.records if "dropped a datagram" in r.getMessage()]
            assert len(lines) == 1, lines
            assert "2000 bytes, larger than the module's 1460-byte maximum" in lines[0]
            m = Metrics()
            _data_path(SimpleNamespace(manager=rig.manager, proxy=proxy), m)
            assert m.value("modemd_datagrams_dropped_total",
                           {"forward": "dns", "reason": "oversize"}) == 3
            client.close()
        remote.close()


async def test_listen_tcp_reaches_local_service(tmp_path):
    async with modem() as rig, tcp_server(echo_handler) as target:
        toml = (
            f'[[listen]]\nname = "inbound"\nprotocol = "tcp"\nmodule_port = 2020\n'
            f'target = "tcp:127.0.0.1:{target.port}"\n'
        )
        async with running_proxy(rig, proxy_config(toml)) as proxy:
            with trio.fail_after(5):
                while True:
                    try:
                        real = rig.emu.module_listen_port(2020)
                        break
                    except LookupError:
                        await trio.sleep(0.01)
            data = payload(300_000)
            for _ in range(2):
                async with await trio.open_tcp_stream("127.0.0.1", real) as client:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(client.send_all, data)
                        got = await recv_exactly(client, len(data))
                assert sha(got) == sha(data)
            assert proxy.flows["inbound"].opened == 2
            assert rig.manager.stats.accepted == 2


async def test_listen_udp_service_replies_to_the_right_peer():
    async with modem() as rig:
        target = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
        await target.bind(("127.0.0.1", 0))

        async def service() -> None:
            while True:
                data, addr = await target.recvfrom(65535)
                await target.sendto(data.upper(), addr)

        toml = (
            f'[[listen]]\nname = "usvc"\nprotocol = "udp"\nmodule_port = 5683\n'
            f'target = "udp:127.0.0.1:{target.getsockname()[1]}"\n'
        )
        async with running_proxy(rig, proxy_config(toml)), trio.open_nursery() as nursery:
            nursery.start_soon(service)
            with trio.fail_after(5):
                while True:
                    try:
                        real = rig.emu.module_listen_port(5683)
                        break
                    except LookupError:
                        await trio.sleep(0.01)
            peers = []
            for _ in range(3):
                p = trio.socket.socket(pysocket.AF_INET, pysocket.SOCK_DGRAM)
                await p.connect(("127.0.0.1", real))
                peers.append(p)
            for i, p in enumerate(peers):
                await p.send(f"hello from {i}".encode())
            for i, p in enumerate(peers):
                with trio.fail_after(10):
                    assert await p.recv(100) == f"HELLO FROM {i}".encode()
            for p in peers:
                p.close()
            nursery.cancel_scope.cancel()
        target.close()


async def test_listen_udp_refused_on_bc25():
    from modemd.proxy.proxy import ProxyConfigError

    async with modem("bc25") as rig:
        toml = (
            '[[listen]]\nname = "u"\nprotocol = "udp"\nmodule_port = 5683\n'
            'target = "udp:127.0.0.1:5683"\n'
        )
        error = await start_error(rig, proxy_config(toml))
        assert isinstance(error, ProxyConfigError)
        assert "bc25 has no UDP SERVICE" in str(error)


async def test_non_loopback_listen_refused():
    from modemd.config import Endpoint
    from modemd.proxy.endpoints import bind_stream

    with pytest.raises(EndpointError, match="not a loopback address"):
        await bind_stream(Endpoint("tcp", host="0.0.0.0", port=free_port()), what="forward x")
    listener, _ = await bind_stream(
        Endpoint("tcp", host="0.0.0.0", port=free_port()), what="x", allow_non_loopback=True
    )
    await listener.aclose()


async def test_reload_keeps_unchanged_forward_connections():
    async with modem() as rig, tcp_server(echo_handler) as server:
        p1, p2, p3 = free_port(), free_port(), free_port()
        a = forward_toml("a", f"tcp:127.0.0.1:{p1}", server.port)
        b = forward_toml("b", f"tcp:127.0.0.1:{p2}", server.port)
        c = forward_toml("c", f"tcp:127.0.0.1:{p3}", server.port)
        async with running_proxy(rig, proxy_config(a + b)) as proxy:
            client_a = await trio.open_tcp_stream("127.0.0.1", p1)
            client_b = await trio.open_tcp_stream("127.0.0.1", p2)
            for cl in (client_a, client_b):
                await cl.send_all(b"x")
                assert await recv_exactly(cl, 1) == b"x"
            flow_b = proxy.flows["b"]
            errors = await proxy.reload(proxy_config(a + c))
            assert errors == []
            assert proxy.units == ["forward a", "forward c"]
            assert sorted(proxy.flows) == ["a", "c"]  # b's counts are no longer published
            await client_a.send_all(b"still here")
            assert await recv_exactly(client_a, 10) == b"still here"
            with pytest.raises(trio.BrokenResourceError) as info:  # b was removed: reset
                with trio.fail_after(5):
                    await recv_all(client_b)
            assert linger_reset_error(info.value)
            assert flow_b.resets["stopped"] == 1
            with pytest.raises(OSError):
                await trio.open_tcp_stream("127.0.0.1", p2)
            async with await trio.open_tcp_stream("127.0.0.1", p3) as client_c:
                await client_c.send_all(b"new")
                assert await recv_exactly(client_c, 3) == b"new"
            await client_a.aclose()
            await client_b.aclose()


async def test_bulk_transfers_share_the_line_and_small_messages_stay_fast():
    size = 1_500_000
    data = payload(size)

    async def handler(stream, server):
        first = await stream.receive_some(1)
        if first == b"B":  # bulk: pour data
            await stream.send_all(data)
        else:  # interactive: echo small messages
            await stream.send_all(first)
            async for chunk in stream:
                await stream.send_all(chunk)

    async with modem() as rig, tcp_server(handler) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("f", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg):
            progress = [0] * 4
            first_done: list[list[int]] = []
            rtts: list[float] = []

            async def bulk(i: int) -> None:
                async with await trio.open_tcp_stream("127.0.0.1", port) as c:
                    await c.send_all(b"B")
                    while chunk := await c.receive_some(65536):
                        progress[i] += len(chunk)
                    if not first_done:
                        first_done.append(list(progress))

            async def interactive() -> None:
                async with await trio.open_tcp_stream("127.0.0.1", port) as c:
                    await c.send_all(b"I")
                    assert await recv_exactly(c, 1) == b"I"
                    while sum(progress) < size:  # wait until the bulk transfers are going
                        await trio.sleep(0.01)
                    for _ in range(20):
                        t = trio.current_time()
                        await c.send_all(b"ping")
                        assert await recv_exactly(c, 4) == b"ping"
                        rtts.append(trio.current_time() - t)
                        await trio.sleep(0.005)  # direct push moves the bulk data in < 1 s
                    bulk_running = min(progress) < size
                    assert bulk_running, "the interactive exchange must overlap the bulk ones"

            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(bulk, i)
                nursery.start_soon(interactive)
            assert progress == [size] * 4
            # round robin: when the first bulk transfer ended, the others had nearly as much
            assert min(first_done[0]) >= 0.6 * size, first_done
            rtts.sort()
            assert rtts[len(rtts) // 2] < 0.05 and rtts[-1] < 0.25, rtts


async def test_bulk_uploads_share_the_line_when_more_sockets_than_turns():
    """Chained QISENDs give way when another socket waits for a turn, not only when a command is
    queued: three uploads (more than the scheduler's two turns; an unacked window large enough
    that no ACK poll interrupts a chain) move together, and none starves."""
    size = 100_000
    data = payload(size)
    received: dict[int, int] = {}
    at_first_done: dict[int, int] = {}

    async def handler(stream, server):
        tag = (await recv_exactly(stream, 1))[0]
        received[tag] = 0
        while received[tag] < size:
            received[tag] += len(await stream.receive_some(65536))
        if not at_first_done:
            at_first_done.update(received)

    async with modem(baud=921600) as rig, tcp_server(handler) as server:  # the line is the bottleneck
        port = free_port()
        cfg = proxy_config(forward_toml("f", f"tcp:127.0.0.1:{port}", server.port),
                           unacked_window=1 << 20)
        async with running_proxy(rig, cfg):

            async def upload(tag: int) -> None:
                async with await trio.open_tcp_stream("127.0.0.1", port) as c:
                    await c.send_all(bytes([tag]) + data)
                    await recv_all(c)  # the server closes once it has everything

            with trio.fail_after(120):
                async with trio.open_nursery() as nursery:
                    for tag in range(3):
                        nursery.start_soon(upload, tag)
            assert received == {0: size, 1: size, 2: size}
            # round robin: when the first upload was complete, the others had nearly as much
            assert min(at_first_done.values()) >= 0.6 * size, at_first_done
