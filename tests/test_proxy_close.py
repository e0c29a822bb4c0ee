"""Every close path of a forwarded connection, and abnormal ends (PDP loss, module reset, ACK rule,
command deadline), through a TCP forward to real loopback servers."""

from __future__ import annotations

import socket as pysocket
import struct

import pytest
import trio

from modemd.config import SupervisorConfig
from tests.conftest import wait_answering
from tests.sockets_helpers import (
    bring_up,
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
    slow_client,
    tcp_server,
)
from tests.test_proxy import forward_toml


async def wait_for(predicate, timeout: float = 60.0, step: float = 0.005) -> None:
    """Poll `predicate`; under MockClock use a large `step` (each sleep costs real time)."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)


async def expect_reset(client: trio.SocketStream, timeout: float = 30) -> None:
    """The client sees ECONNRESET, not a clean EOF."""
    with pytest.raises(trio.BrokenResourceError) as info:
        with trio.fail_after(timeout):
            while await client.receive_some(65536):
                pass
    assert linger_reset_error(info.value)


async def test_remote_close_drains_everything_then_eof():
    data = payload(400_000)

    async def send_and_close(stream, server):
        await stream.send_all(data)

    async with modem() as rig, tcp_server(send_and_close) as server:
        port = free_port()
        async with running_proxy(rig, proxy_config(forward_toml("r", f"tcp:127.0.0.1:{port}",
                                                                server.port))) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            got = await recv_all(client)  # EOF (not a reset) after every byte
            assert sha(got) == sha(data)
            await client.aclose()
            await wait_for(lambda: rig.manager.ids_in_use == 0)
            assert any(c.startswith("AT+QICLOSE=") for c in rig.emu.commands)
            assert proxy.flows["r"].resets == {}
            assert proxy.flows["r"].closed == 1


async def test_remote_close_with_unread_module_data():
    """The peer closes while data still waits in the module: drained before the client's EOF."""
    data = payload(30_000)
    sent = trio.Event()

    async def send(stream, server):
        await stream.send_all(data)
        sent.set()
        await trio.sleep_forever()

    async with modem() as rig, tcp_server(send) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("r", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await sent.wait()
            await wait_for(lambda: rig.manager.connections() != [])
            cid = rig.manager.connections()[0]["connect_id"]
            rig.emu.remote_close(cid)
            got = await recv_all(client)
            assert sha(got) == sha(data)
            await client.aclose()
            await wait_for(lambda: rig.manager.ids_in_use == 0)


async def test_local_eof_then_remote_answers_and_closes():
    request = payload(50_000)

    async def answer(stream, server):
        got = await recv_exactly(stream, len(request))
        await stream.send_all(b"sha:" + sha(got).encode())

    async with modem() as rig, tcp_server(answer) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("q", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(request)
            await client.send_eof()
            assert await recv_all(client) == b"sha:" + sha(request).encode()
            await client.aclose()
            await wait_for(lambda: rig.manager.ids_in_use == 0)
            assert proxy.flows["q"].resets == {}


async def test_local_eof_remote_silent_closes_after_linger():
    request = payload(100_000)
    result: dict = {}

    async def sink(stream, server):
        result["data"] = await recv_all(stream)  # waits for our QICLOSE (the module's FIN)
        result["at"] = trio.current_time()

    async with modem() as rig, tcp_server(sink) as server:
        port = free_port()
        cfg = proxy_config(
            forward_toml("s", f"tcp:127.0.0.1:{port}", server.port), linger_seconds=0.3
        )
        async with running_proxy(rig, cfg):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(request)
            await client.send_eof()
            eof_at = trio.current_time()
            assert await recv_all(client) == b""
            await wait_for(lambda: "data" in result)
            assert sha(result["data"]) == sha(request)
            assert result["at"] - eof_at >= 0.3
            await client.aclose()


async def test_local_client_reset_closes_module_socket():
    closed = trio.Event()

    async def wait_eof(stream, server):
        await recv_all(stream)
        closed.set()

    async with modem() as rig, tcp_server(wait_eof) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("x", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"hello")
            await wait_for(lambda: rig.manager.connections() != [])
            client.socket.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
            client.socket.close()
            with trio.fail_after(5):
                await closed.wait()
            await wait_for(lambda: rig.manager.ids_in_use == 0)


async def test_open_failure_resets_forward_client(caplog):
    async with modem() as rig:
        port, dead = free_port(), free_port()
        async with running_proxy(rig, proxy_config(forward_toml("d", f"tcp:127.0.0.1:{port}",
                                                                dead))) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await expect_reset(client)
            await client.aclose()
            assert proxy.flows["d"].refused == {"socket_connect_failed": 1}
            assert "566 socket_connect_failed" in caplog.text
            assert rig.manager.ids_in_use == 0


async def test_pdp_loss_resets_clients_and_listeners_come_back():
    async with modem() as rig, tcp_server(echo_handler) as server:
        port = free_port()
        toml = forward_toml("p", f"tcp:127.0.0.1:{port}", server.port) + (
            f'[[listen]]\nname = "in"\nprotocol = "tcp"\nmodule_port = 2020\n'
            f'target = "tcp:127.0.0.1:{server.port}"\n'
        )
        async with running_proxy(rig, proxy_config(toml, linger_seconds=0.3)) as proxy:
            await wait_for(lambda: has_listener(rig, 2020))
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
            for c in clients:
                await c.send_all(b"ping")
                assert await recv_exactly(c, 4) == b"ping"
            rig.emu.pdp_deactivate(1)
            rig.link.context_down(1)  # what the supervisor does on "pdpdeact"
            for c in clients:
                await expect_reset(c)
                await c.aclose()
            assert proxy.flows["p"].resets["context_lost"] == 3
            # the listener stays bound and refuses while the context is down
            late = await trio.open_tcp_stream("127.0.0.1", port)
            await expect_reset(late)
            await late.aclose()
            assert proxy.flows["p"].refused["not_serving"] == 1
            await wait_for(lambda: not has_listener(rig, 2020))
            # the context comes back: forwards work again, the module-side listener is re-opened
            await rig.at.run("AT+QIDEACT=1")
            await rig.at.qiact(1)
            rig.link.context_up(1, ("10.0.0.3",))
            await wait_for(lambda: has_listener(rig, 2020))
            async with await trio.open_tcp_stream("127.0.0.1", port) as c:
                await c.send_all(b"again")
                assert await recv_exactly(c, 5) == b"again"
            real = rig.emu.module_listen_port(2020)
            async with await trio.open_tcp_stream("127.0.0.1", real) as c:
                await c.send_all(b"inbound")
                assert await recv_exactly(c, 7) == b"inbound"
            await wait_for(lambda: rig.manager.ids_in_use == 1)  # only the listener


def has_listener(rig, module_port: int) -> bool:
    try:
        rig.emu.module_listen_port(module_port)
        return True
    except LookupError:
        return False


async def test_module_reset_resets_clients_and_cleans_ids(mock_clock):
    async with modem() as rig, tcp_server(echo_handler) as server:
        port = free_port()
        cfg = proxy_config(
            forward_toml("m", f"tcp:127.0.0.1:{port}", server.port), linger_seconds=0.3
        )
        async with running_proxy(rig, cfg) as proxy:
            clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
            for c in clients:
                await c.send_all(b"x")
                assert await recv_exactly(c, 1) == b"x"
            await rig.emu.power_off()
            rig.link.module_reset()  # what the supervisor does on a power cut / RDY
            for c in clients:
                await expect_reset(c)
                await c.aclose()
            # the module rebooted: no QICLOSE is queued in front of the supervisor's commands, the
            # IDs wait in quarantine until the stale sweep of the next session
            await wait_for(lambda: len(rig.manager.pool.ids_in("quarantined")) == 2, step=0.1)
            assert rig.manager.stats.qiclose_failures == 0
            await rig.emu.power_on()
            await wait_answering(rig.at)
            await rig.at.run("ATE0")
            await bring_up(rig.at)
            rig.link.context_up(1, ("10.0.0.4",))
            async with await trio.open_tcp_stream("127.0.0.1", port) as c:
                await c.send_all(b"back")
                assert await recv_exactly(c, 4) == b"back"
            assert proxy.flows["m"].resets["context_lost"] == 2
            await wait_for(lambda: rig.manager.ids_in_use == 0, step=0.1)
            assert rig.manager.pool.ids_in("quarantined") == []


async def test_ack_rule_resets_a_connection_the_remote_stopped_acking(mock_clock):
    stalled = trio.Event()

    async def never_read(stream, server):
        stalled.set()
        await trio.sleep_forever()

    async with modem(tx_buffer=4096, sock_sndbuf=4096, sock_rcvbuf=4096) as rig, \
            tcp_server(never_read) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("a", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            start = trio.current_time()

            resets = []

            async def push() -> None:
                try:
                    while True:
                        await client.send_all(b"\0" * 65536)
                except trio.BrokenResourceError as exc:
                    resets.append(linger_reset_error(exc))

            async def pull() -> None:
                try:
                    while await client.receive_some(65536):
                        pass
                    resets.append(False)  # a clean EOF
                except trio.BrokenResourceError as exc:
                    resets.append(linger_reset_error(exc))

            with trio.fail_after(300):  # the reset reaches whichever call comes first
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(push)
                    nursery.start_soon(pull)
            assert resets[0] is True, resets
            await client.aclose()
            elapsed = trio.current_time() - start
            assert 115 <= elapsed <= 200, elapsed
            assert rig.manager.stats.ack_timeouts == 1
            assert proxy.flows["a"].resets["ack_timeout"] == 1
            await wait_for(lambda: rig.manager.ids_in_use == 0, timeout=30, step=1)


async def test_silent_module_resets_the_connection(mock_clock):
    async with modem() as rig, tcp_server(echo_handler) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("h", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await client.send_all(b"x")
            assert await recv_exactly(client, 1) == b"x"
            rig.emu.hang(True)
            await client.send_all(b"y")
            await expect_reset(client, timeout=300)
            await client.aclose()
            assert proxy.flows["h"].resets["command_timeout"] == 1
            rig.emu.hang(False)


async def test_slow_reader_keeps_proxy_memory_bounded():
    size = 1_500_000
    data = payload(size)
    progress = {"sent": 0}

    async def pour(stream, server):
        view = memoryview(data)
        for i in range(0, size, 16384):
            await stream.send_all(view[i : i + 16384])
            progress["sent"] = i + 16384

    sup = SupervisorConfig(reconcile_interval=60.0)
    async with modem(supervisor_cfg=sup, sock_rcvbuf=32768) as rig, \
            tcp_server(pour) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("slow", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            client = await slow_client(port)
            got = bytearray(await client.receive_some(1000))
            await trio.sleep(1.0)  # the client does not read; the remote keeps trying to send
            stalled_at = progress["sent"]
            await trio.sleep(0.5)
            assert progress["sent"] == stalled_at < size  # the remote is throttled
            assert proxy.gauge.peak <= (2 * 4 + 1) * 1460 + 1500  # a read waiting, one in the QISEND pipeline, one QIRD
            while len(got) < size:  # now read slowly-ish, then everything
                got += await client.receive_some(65536)
            assert sha(bytes(got)) == sha(data)
            assert proxy.gauge.peak <= (2 * 4 + 1) * 1460 + 1500  # a read waiting, one in the QISEND pipeline, one QIRD
            await client.aclose()


async def test_unacked_window_stops_reading_the_client():
    data = payload(1_000_000)
    go = trio.Event()
    received: dict = {}

    async def reads_later(stream, server):
        await go.wait()
        received["data"] = await recv_exactly(stream, len(data))

    async with modem(tx_buffer=65536, sock_sndbuf=4096, sock_rcvbuf=4096) as rig, \
            tcp_server(reads_later) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("w", f"tcp:127.0.0.1:{port}", server.port),
                           unacked_window=8192)
        async with running_proxy(rig, cfg) as proxy:
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, data)
                # wait until the proxy stops reading (a loaded machine needs longer than an idle one)
                stalled = -1
                with trio.fail_after(20):
                    while proxy.flows["w"].bytes_up != stalled:
                        stalled = proxy.flows["w"].bytes_up
                        await trio.sleep(0.3)
                assert stalled < 300_000  # kernel buffers + window, not the whole 1 MB
                (row,) = rig.manager.connections()
                assert row["unacked"] >= 8192  # the window, not SEND FAIL, stopped us
                assert rig.manager.stats.send_fail == 0
                go.set()
            with trio.fail_after(30):
                while "data" not in received:
                    await trio.sleep(0.01)
            assert sha(received["data"]) == sha(data)
            await client.aclose()
