"""The test suite's QuietClock jumps at once only where it can see that no byte is in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tty
from pathlib import Path

import trio
import trio.testing

ROOT = Path(__file__).resolve().parents[1]


async def test_a_pty_answer_in_flight_is_never_jumped_over(mock_clock):
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    module, daemon = trio.lowlevel.FdStream(master), trio.lowlevel.FdStream(slave)

    async def read_answer() -> None:
        with trio.fail_after(0.001):  # virtual: a jump before the hand-over would fire it
            assert await daemon.receive_some(4) == b"OK\r\n"

    try:
        for _ in range(2000):  # the reader waits first; the loop goes idle, the answer on its way
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_answer)
                await trio.testing.wait_all_tasks_blocked()
                await module.send_all(b"OK\r\n")
    finally:
        await module.aclose()
        await daemon.aclose()


# Run in a fresh interpreter: a thread, child or socket another test left behind would slow the
# clock down here and hide what each of these does.
KINDS = r"""
import json, os, socket, sys, trio
from tests.quiet_clock import quiet_clock

async def kinds(clock):
    def jumps():
        return (clock.fast_jumps, clock.slow_jumps)
    seen = {}

    async def after(name, seconds=10.0):
        before = jumps()
        await trio.sleep(seconds)
        now = jumps()
        seen[name] = [now[0] - before[0], now[1] - before[1]]

    master, slave = os.openpty()
    await after("ptys")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        await after("tcp listener")
        with socket.create_connection(listener.getsockname()):
            await after("connected tcp socket")
    child = await trio.lowlevel.open_process([sys.executable, "-c", "input()"], stdin=-1)
    await after("child process")
    await child.stdin.aclose()
    await child.wait()
    await after("child reaped")
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync,
                           lambda: trio.from_thread.run(release.wait, trio_token=token))
        await after("busy thread")
        release.set()
    await after("idle worker thread")
    print(json.dumps(seen))

clock = quiet_clock()
trio.run(kinds, clock, clock=clock)
"""


def test_only_what_cannot_be_seen_makes_the_clock_wait_real_time():
    out = subprocess.run([sys.executable, "-c", KINDS], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    fast, slow = [1, 0], [0, 1]
    assert json.loads(out) == {
        "ptys": fast, "tcp listener": fast, "connected tcp socket": slow, "child process": slow,
        "child reaped": fast, "busy thread": slow, "idle worker thread": fast,
    }
