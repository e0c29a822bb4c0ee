"""Direct push (access mode 1): data without AT+QIRD round trips, the switch to buffer mode when
the local reader lags (AT+QISWTMD), and back once it keeps up - without losing, reordering or
piling up a byte."""

from __future__ import annotations

import pytest
import trio

from modemd.config import ProxyConfig
from modemd.sockets.socket import PUSH_HIGH
from tests.sockets_helpers import (
    free_port,
    modem,
    payload,
    proxy_config,
    recv_exactly,
    running_proxy,
    sha,
    slow_client,
    tcp_server,
)
from tests.test_proxy import forward_toml

# what may arrive while AT+QISWTMD=id,0 is on its way (unlimited baud: the emulator pushes as fast
# as the pty takes it); the bound that matters is that it does not grow with the transfer
IN_FLIGHT = 256 * 1024


def streamer(data: bytes):
    async def send(stream, server):
        await stream.send_all(data)
        await trio.sleep_forever()

    return send


async def read_n(msock, n: int) -> bytes:
    got = bytearray()
    with trio.fail_after(30):
        while len(got) < n:
            chunk = await msock.receive()
            assert chunk, "EOF before all data"
            got += chunk
    return bytes(got)


@pytest.mark.parametrize("family", ["bg96", "bg95", "generic", "bc25", "rg500u"])
async def test_push_delivers_without_reads(family):
    data = payload(100_000)
    async with modem(family) as rig, tcp_server(streamer(data)) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        assert msock.pushing
        assert sha(await read_n(msock, len(data))) == sha(data)
        opens = [c for c in rig.emu.commands if c.startswith("AT+QIOPEN=")]
        assert opens[-1].split(",")[5:7] == ["0", "1"]  # local port 0, access mode 1
        assert not [c for c in rig.emu.commands if c.startswith("AT+QIRD")]
        assert rig.manager.stats.bytes_pushed == len(data)
        await msock.aclose()


async def test_buffer_mode_when_push_is_off():
    data = payload(20_000)
    async with modem(proxy_cfg=ProxyConfig(direct_push=False)) as rig, \
            tcp_server(streamer(data)) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        assert not msock.pushing
        assert sha(await read_n(msock, len(data))) == sha(data)
        assert [c for c in rig.emu.commands if c.startswith("AT+QIRD")]
        assert rig.manager.stats.bytes_pushed == 0
        await msock.aclose()


async def test_lagging_reader_switches_to_buffer_and_back_losslessly():
    """A local client that stops reading: the socket goes to buffer mode (the remote is throttled,
    modemd holds at most PUSH_HIGH plus what was on the line), then catches up and the socket goes
    back to push. Every byte arrives once, in order."""
    size = 3_000_000
    data = payload(size)
    progress = {"sent": 0}

    async def pour(stream, server):
        for i in range(0, size, 16384):
            await stream.send_all(data[i : i + 16384])
            progress["sent"] = i + 16384
        await trio.sleep_forever()

    async with modem(sock_rcvbuf=32768) as rig, tcp_server(pour) as server:
        port = free_port()
        cfg = proxy_config(forward_toml("p", f"tcp:127.0.0.1:{port}", server.port))
        async with running_proxy(rig, cfg) as proxy:
            client = await slow_client(port)
            got = bytearray(await recv_exactly(client, 200_000))  # keeping up: push
            (msock,) = rig.manager.dispatcher.sockets.values()
            assert msock.pushing and msock.mode_switches == 0
            await trio.sleep(1.0)  # stop reading: the pushed queue passes PUSH_HIGH
            assert not msock.pushing and msock.mode_switches == 1
            stalled = progress["sent"]
            await trio.sleep(0.5)
            assert progress["sent"] == stalled < size  # the remote is throttled
            for _ in range(10):  # slowly: buffer mode, one AT+QIRD per chunk taken
                got += await client.receive_some(8192)
                await trio.sleep(0.02)
            while len(got) < size:  # fast again: the module's buffer drains, push resumes
                got += await client.receive_some(65536)
            assert sha(bytes(got)) == sha(data)
            with trio.fail_after(5):  # the next read finds the module's buffer empty
                while not msock.pushing:
                    await trio.sleep(0.01)
            assert msock.mode_switches >= 2
            assert msock.pushed_peak <= PUSH_HIGH + IN_FLIGHT
            assert proxy.gauge.peak <= (2 * 4 + 1) * 1460 + 1500  # a read waiting, one in the QISEND pipeline, one QIRD
            await client.aclose()


async def test_remote_close_while_switched_to_buffer_loses_nothing():
    """The remote closes while the module buffers for a lagging reader: everything it sent is
    read (pushed first, then AT+QIRD) before the EOF."""
    size = 600_000
    data = payload(size)
    switched = trio.Event()

    async def send_then_close(stream, server):
        await stream.send_all(data[:100_000])
        await switched.wait()
        await stream.send_all(data[100_000:])
        await stream.aclose()

    async with modem(sock_rcvbuf=32768) as rig, tcp_server(send_then_close) as server:
        msock = await rig.manager.open_client(1, "TCP", "127.0.0.1", server.port)
        got = bytearray(await read_n(msock, 10_000))
        with trio.fail_after(10):  # not reading: the governor switches to buffer mode
            while msock.pushing:
                await trio.sleep(0.01)
        switched.set()  # the rest comes (the module buffers it) and the remote closes
        with trio.fail_after(30):
            while chunk := await msock.receive():
                got += chunk
        assert sha(bytes(got)) == sha(data)
        assert msock.remote_closed and msock.mode_switches >= 1
        await msock.aclose()


async def test_incoming_connection_switches_to_push_once_drained():
    async with modem() as rig:
        mgr = rig.manager
        listener = await mgr.open_server(1, "TCP LISTENER", 2021)
        real = rig.emu.module_listen_port(2021)
        remote = await trio.open_tcp_stream("127.0.0.1", real)
        with trio.fail_after(5):
            incoming = await listener.incoming.receive()
        assert incoming.push_capable and not incoming.pushing  # the listener's mode: buffer
        got = bytearray()

        async def reader() -> None:
            while chunk := await incoming.receive():
                got.extend(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await remote.send_all(b"first")
            with trio.fail_after(5):
                while not incoming.pushing:  # read, then the next read found the buffer empty
                    await trio.sleep(0.01)
            assert got == b"first"
            reads = len([c for c in rig.emu.commands if c.startswith("AT+QIRD")])
            data = payload(50_000)
            await remote.send_all(data)
            with trio.fail_after(10):
                while len(got) < 5 + len(data):
                    await trio.sleep(0.01)
            assert got == b"first" + data
            assert len([c for c in rig.emu.commands if c.startswith("AT+QIRD")]) == reads
            nursery.cancel_scope.cancel()
        await remote.aclose()
        await incoming.aclose()
        await listener.aclose()
