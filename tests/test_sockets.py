"""The socket layer against the emulator on a real pty, with real loopback servers."""

from __future__ import annotations

import socket as pysocket

import pytest
import trio

from modemd.config import ProxyConfig, SupervisorConfig
from modemd.sockets.errors import (
    INVALID_HOST,
    NOT_SERVING,
    OPEN_TIMEOUT,
    QUEUE_FULL,
    QUEUE_TIMEOUT,
    OpenError,
)
from tests.conftest import FAMILIES
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    modem,
    payload,
    recv_all,
    recv_exactly,
    sha,
    tcp_server,
)


@pytest.mark.parametrize("family", FAMILIES)
async def test_client_socket_echo_round_trip(family):
    async with modem(family) as rig, tcp_server(echo_handler) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        data = payload(100_000)
        got = bytearray()

        async def reader() -> None:
            while len(got) < len(data):
                got.extend(await msock.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await msock.send(data)
        assert sha(bytes(got)) == sha(data)
        await msock.aclose()
        assert rig.manager.ids_in_use == 0
        assert rig.manager.stats.opened == 1 and rig.manager.stats.closed == 1


async def sink_handler(stream, server) -> None:
    server.received[server.connections] = await recv_all(stream)
    server.done.set()


async def test_send_fail_is_backpressure_not_an_error():
    async with modem() as rig, tcp_server(sink_handler) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        rig.emu.send_fail(5)
        data = payload(20_000)
        await msock.send(data)
        assert await msock.flush(10)
        await msock.aclose()
        await server.done.wait()
        assert sha(server.received[1]) == sha(data)
        assert rig.manager.stats.send_fail == 5
        assert msock.send_fail == 5
        assert msock.failure is None


async def test_ack_queries_of_many_sockets_go_one_at_a_time():
    """Sockets opened together poll AT+QISEND=id,0 together; those polls take background turns,
    so at most one is queued in the channel and another socket's data goes between them."""
    async with modem() as rig, tcp_server(sink_handler) as server:
        socks = [await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port) for _ in range(6)]
        for msock in socks:
            await msock.send(b"x" * 100)
        at = socks[0].env.at
        polls, peak = 0, 0
        original = at.qisend_ack

        async def counted(connect_id: int):
            nonlocal polls, peak
            polls += 1
            peak = max(peak, polls)
            try:
                return await original(connect_id)
            finally:
                polls -= 1

        at.qisend_ack = counted
        async with trio.open_nursery() as nursery:
            for msock in socks:
                nursery.start_soon(msock.query_ack)
            await socks[0].send(b"data between the polls")
        assert peak == 1
        assert [msock.acked for msock in socks[1:]] == [100] * 5
        for msock in socks:
            await msock.aclose()


@pytest.mark.parametrize("family", ["bg96", "bc25"])
async def test_lost_recv_urc_is_recovered_by_reconcile(family):
    """Buffer mode (AT+QIRD): a lost "recv" URC is found by the reconcile poll. (Direct push has
    no such URC to lose: its data arrives with it.)"""
    sup = SupervisorConfig(reconcile_interval=0.2)
    buffer_mode = ProxyConfig(direct_push=False)

    async def hello(stream, server):
        await stream.send_all(b"hello after a lost URC")
        await trio.sleep_forever()

    async with modem(family, supervisor_cfg=sup, proxy_cfg=buffer_mode) as rig, \
            tcp_server(hello) as server:
        rig.emu.drop_recv_urc(1)
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        with trio.fail_after(5):
            got = await msock.receive()
        assert got == b"hello after a lost URC"
        assert rig.manager.stats.reconcile_recoveries == 1
        assert rig.manager.stats.reconcile_polls >= 1
        await msock.aclose()


async def test_exhausted_ids_queue_then_refuse():
    cfg = ProxyConfig(queue_limit=1, queue_timeout=30.0)
    async with modem(proxy_cfg=cfg) as rig, tcp_server(echo_handler) as server:
        mgr = rig.manager
        socks = [await mgr.open_client(1, "TCP", "127.0.0.1", server.port) for _ in range(12)]
        assert mgr.ids_in_use == 12 and mgr.ids_available == 0
        assert sorted(s.connect_id for s in socks) == list(range(12))
        result: list = []

        async def waiter() -> None:
            result.append(await mgr.open_client(1, "TCP", "127.0.0.1", server.port))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await wait_for(lambda: mgr.queued == 1)
            with pytest.raises(OpenError) as info:  # the queue holds one
                await mgr.open_client(1, "TCP", "127.0.0.1", server.port)
            assert info.value.reason == QUEUE_FULL
            assert result == []
            freed = socks[3].connect_id
            await socks[3].aclose()  # an ID is free again only after QICLOSE answered
        assert result[0].connect_id == freed
        assert mgr.stats.open_failed[QUEUE_FULL] == 1
        for s in socks[:3] + socks[4:] + result:
            await s.aclose()
        assert mgr.ids_in_use == 0


async def test_queue_deadline_refuses(mock_clock):
    cfg = ProxyConfig(queue_limit=4, queue_timeout=30.0)
    async with modem(proxy_cfg=cfg) as rig, tcp_server(echo_handler) as server:
        mgr = rig.manager
        socks = [await mgr.open_client(1, "TCP", "127.0.0.1", server.port) for _ in range(12)]
        start = trio.current_time()
        with pytest.raises(OpenError) as info:
            await mgr.open_client(1, "TCP", "127.0.0.1", server.port)
        assert info.value.reason == QUEUE_TIMEOUT
        assert 30 <= trio.current_time() - start < 31
        assert mgr.queued == 0
        for s in socks:
            await s.aclose()


async def test_socket_id_used_closes_it_and_takes_another():
    async with modem() as rig, tcp_server(echo_handler) as server:
        # a socket the manager does not know about, on the ID it would pick first
        await rig.at.qiopen_and_wait(1, 11, "TCP", "127.0.0.1", server.port)
        rig.manager._cleaned = (rig.at, rig.link.module_generation)  # skip the stale sweep
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        assert msock.connect_id == 10
        assert rig.manager.stats.id_collisions == 1
        assert "AT+QICLOSE=11,8" in rig.emu.commands
        assert rig.emu.socket_info(11) is None
        assert rig.manager.pool.slot(11).state == "free"
        await msock.aclose()


async def test_reset_stale_closes_only_unowned_ids():
    async with modem() as rig, tcp_server(echo_handler) as server:
        mine = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        for cid in (2, 5):
            await rig.at.qiopen_and_wait(1, cid, "TCP", "127.0.0.1", server.port)
        assert await rig.manager.reset_stale(rig.at) == 2
        assert rig.emu.socket_info(2) is None and rig.emu.socket_info(5) is None
        assert rig.emu.socket_info(mine.connect_id) is not None
        await mine.send(b"alive")
        assert await mine.receive() == b"alive"
        await mine.aclose()


async def test_stale_ids_are_closed_before_the_first_open():
    async with modem() as rig, tcp_server(echo_handler) as server:
        await rig.at.qiopen_and_wait(1, 11, "TCP", "127.0.0.1", server.port)
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        assert msock.connect_id == 11  # cleaned first, so no 563
        assert rig.manager.stats.stale_closed == 1
        assert rig.manager.stats.id_collisions == 0
        await msock.aclose()


async def test_open_timeout_closes_the_id_and_reports(mock_clock):
    blocker = pysocket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(0)
    filler = pysocket.socket()
    filler.connect(blocker.getsockname())  # the accept queue is now full: SYNs are dropped
    try:
        async with modem() as rig:
            start = trio.current_time()
            with pytest.raises(OpenError) as info:
                await rig.manager.open_client(1, "TCP", "127.0.0.1", blocker.getsockname()[1])
            assert info.value.reason == OPEN_TIMEOUT
            assert 150 <= trio.current_time() - start < 160
            assert any(c.startswith("AT+QICLOSE=11") for c in rig.emu.commands)
            assert rig.manager.ids_in_use == 0
            assert rig.link.context(1).open_failures == 1
            assert rig.manager.stats.open_timeouts == 1
    finally:
        filler.close()
        blocker.close()


async def test_five_failed_opens_to_one_dead_remote_cycle_nothing():
    """565/566 to one remote are that remote's trouble: no PDP cycle (it would reset the healthy
    connections of every other forward)."""
    async with modem() as rig:
        port = free_port()  # nobody listens
        for _ in range(5):
            with pytest.raises(OpenError) as info:
                await rig.manager.open_client(1, "TCP", "127.0.0.1", port)
            assert info.value.reason == "socket_connect_failed"
            assert info.value.code == 566
        with pytest.raises(trio.WouldBlock):
            rig.link.cycle_requests.receive_nowait()
        assert rig.manager.stats.open_failed["socket_connect_failed"] == 5
        assert rig.manager.ids_in_use == 0


async def test_five_failed_opens_to_two_remotes_ask_for_a_pdp_cycle():
    async with modem() as rig:
        ports = [free_port(), free_port()]  # nobody listens on either
        for i in range(5):
            with pytest.raises(OpenError):
                await rig.manager.open_client(1, "TCP", "127.0.0.1", ports[i % 2])
        assert rig.link.cycle_requests.receive_nowait() == 1
        assert rig.manager.ids_in_use == 0


async def test_not_serving_refuses_at_once():
    async with modem() as rig:
        rig.link.context_down(1)
        with pytest.raises(OpenError) as info:
            await rig.manager.open_client(1, "TCP", "127.0.0.1", 80)
        assert info.value.reason == NOT_SERVING
        with pytest.raises(OpenError) as info:
            await rig.manager.open_client(1, "TCP", 'evil"\r\nAT+QPOWD=1', 80)
        assert info.value.reason == INVALID_HOST
        assert not any("QPOWD" in c for c in rig.emu.commands)


async def test_incoming_ids_are_respected():
    async with modem() as rig, tcp_server(echo_handler) as server:
        mgr = rig.manager
        listener = await mgr.open_server(1, "TCP LISTENER", 2020)
        assert listener.connect_id == 11
        real = rig.emu.module_listen_port(2020)
        client = await trio.open_tcp_stream("127.0.0.1", real)
        with trio.fail_after(5):
            incoming = await listener.incoming.receive()
        assert incoming.service_type == "TCP INCOMING"
        assert mgr.pool.owner(incoming.connect_id) is incoming
        assert await mgr.reset_stale(rig.at) == 0  # the incoming one is ours, not stale
        out = await mgr.open_client(1, "TCP", "127.0.0.1", server.port)
        assert out.connect_id not in (incoming.connect_id, listener.connect_id)
        await client.send_all(b"in")
        assert await incoming.receive() == b"in"
        await incoming.send(b"out")
        assert await recv_exactly(client, 3) == b"out"
        await client.aclose()
        with trio.fail_after(5):
            assert await incoming.receive() == b""  # remote (the client) closed
        for s in (incoming, out, listener):
            await s.aclose()
        assert mgr.ids_in_use == 0


async def test_connections_snapshot():
    async with modem() as rig, tcp_server(echo_handler) as server:
        msock = await rig.manager.open_client(
            1, "TCP", "127.0.0.1", server.port, label="fwd", local_peer="127.0.0.1:5555"
        )
        await msock.send(b"12345")
        assert await recv_exactly_msock(msock, 5) == b"12345"
        (row,) = rig.manager.connections()
        assert row["connect_id"] == msock.connect_id
        assert row["forward"] == "fwd" and row["local_peer"] == "127.0.0.1:5555"
        assert row["remote"] == f"127.0.0.1:{server.port}"
        assert row["bytes_in"] == 5 and row["bytes_out"] == 5
        assert row["state"] == "open" and row["age"] >= 0
        await msock.aclose()
        assert rig.manager.connections() == []


async def recv_exactly_msock(msock, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        buf += await msock.receive()
    return buf


async def wait_for(predicate, timeout: float = 60.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


async def test_send_after_the_channel_stopped_ends_the_socket_not_the_caller():
    """The port goes away between two QISENDs: the next send fails the socket (ConnectionLost,
    channel_closed, so the bridge resets its client), never a raw ChannelClosed escaping to the
    proxy as an unexpected error (found by bench/soak.py)."""
    from modemd.at.channel import ChannelClosed
    from modemd.sockets.errors import CHANNEL_CLOSED, ConnectionLost

    async with modem() as rig, tcp_server(echo_handler) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        await msock.send(b"before")
        rig.stack.channel._close(ChannelClosed("the port went away"))
        with pytest.raises(ConnectionLost) as caught:
            await msock.send(payload(5000))
        assert caught.value.reason == CHANNEL_CLOSED
        assert msock.failure is caught.value
