"""The test suite's QuietClock jumps at once only where it can see that no byte is in flight."""

from __future__ import annotations

import os
import socket
import sys
import tty

import pytest
import trio
import trio.testing

from tests.quiet_clock import quiet_clock


@pytest.fixture
def clock():
    return quiet_clock()


async def test_ptys_alone_jump_fast_and_every_byte_arrives_before_the_timer(clock):
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        module, daemon = trio.lowlevel.FdStream(master), trio.lowlevel.FdStream(slave)

        async def read_answer() -> None:
            with trio.fail_after(0.001):  # virtual: a jump before the hand-over would fire it
                assert await daemon.receive_some(4) == b"OK\r\n"

        for _ in range(2000):  # the reader waits first; the loop goes idle, the answer on its way
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_answer)
                await trio.testing.wait_all_tasks_blocked()
                await module.send_all(b"OK\r\n")
        await trio.sleep(10.0)
        assert clock.fast_jumps >= 1 and clock.slow_jumps == 0
    finally:
        await module.aclose()
        await daemon.aclose()


async def test_a_connected_ip_socket_makes_it_wait_real_time(clock):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        await trio.sleep(10.0)                     # a listener alone: nothing can be in flight
        assert (clock.fast_jumps, clock.slow_jumps) == (1, 0)
        with socket.create_connection(listener.getsockname()):
            await trio.sleep(10.0)
            assert clock.slow_jumps == 1


async def test_a_child_process_makes_it_wait_real_time(clock):
    child = await trio.lowlevel.open_process([sys.executable, "-c", "input()"], stdin=-1)
    try:
        await trio.sleep(10.0)
        assert (clock.fast_jumps, clock.slow_jumps) == (0, 1)
    finally:
        await child.stdin.aclose()                  # EOF: input() raises, the child ends
        await child.wait()
    await trio.sleep(10.0)
    assert clock.fast_jumps == 1


async def test_a_busy_thread_makes_it_wait_real_time(clock):
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def work() -> None:
        trio.from_thread.run(release.wait, trio_token=token)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, work)
        await trio.sleep(10.0)
        assert clock.slow_jumps == 1
        release.set()
