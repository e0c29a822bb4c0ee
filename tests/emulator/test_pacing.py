"""Line-rate pacing and turnaround, measured in trio's virtual time."""

import pytest
import trio
import trio.testing

from .helpers import activate, modem, open_client, tcp_server


@pytest.fixture
def fast_clock():
    # Pacing sleeps every 20 ms of line time; the pty and loopback I/O in between is immediate,
    # so a 2 ms threshold is safe and keeps this test fast in real time.
    return trio.testing.MockClock(autojump_threshold=0.002)


async def test_baud_paces_both_directions(fast_clock):
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        emu.set_baud(9600)  # 960 bytes/s
        payload = bytes(1460)
        t0 = trio.current_time()
        assert await port.send(0, payload, timeout=60) == "SEND OK"
        up = trio.current_time() - t0
        assert 1.2 < up < 2.5, up  # ~1460 payload bytes + command + answer at 960 B/s
        await server.send_all(bytes(1500))
        await port.urc("+QIURC:", timeout=60)
        t0 = trio.current_time()
        assert len(await port.read(0, 1500, timeout=60)) == 1500
        down = trio.current_time() - t0
        assert 1.3 < down < 2.5, down
        emu.set_baud(0)
        t0 = trio.current_time()
        await port.ok("AT")
        assert trio.current_time() - t0 < 0.1


async def test_turnaround(mock_clock):
    async with modem(turnaround=2.5) as (emu, port):
        t0 = trio.current_time()
        await port.ok("AT", timeout=60)
        assert 2.5 <= trio.current_time() - t0 < 3
        emu.set_turnaround(0)
        t0 = trio.current_time()
        await port.ok("AT")
        assert trio.current_time() - t0 < 0.1
