"""The AT reader's pause between reads of a stream (modemd/pause.py): a timerfd under the real
clock, a trio timeout under a MockClock; either way it lasts its time unless cut short."""

from __future__ import annotations

import trio
import trio.testing

from modemd.pause import Pause

LONG = 60.0  # s: a wait that only a cut (or the test's failure deadline) ends


async def _cut_while_waiting(pause: Pause) -> float:
    """Start a LONG wait, cut it once the waiter sleeps; the trio time the wait took."""
    took: list[float] = []

    async def waiter() -> None:
        t0 = trio.current_time()
        await pause.wait(LONG)
        took.append(trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        pause.cut()
    return took[0]


async def test_under_the_real_clock_a_pause_is_a_timerfd_that_lasts_its_time():
    pause = Pause()
    try:
        t0 = trio.current_time()
        await pause.wait(0.003)
        assert trio.current_time() - t0 >= 0.003
        assert pause.uses_timerfd
    finally:
        pause.close()


async def test_a_cut_ends_the_wait_in_progress_at_once():
    pause = Pause()
    try:
        with trio.fail_after(LONG / 2):  # a cut that did not work fails here, not by a timing
            await _cut_while_waiting(pause)
        assert pause.cuts == 1
    finally:
        pause.close()


async def test_a_cut_with_nobody_waiting_does_not_shorten_the_next_wait():
    pause = Pause()
    try:
        await pause.wait(0.001)  # opens the timer
        pause.cut()
        assert pause.cuts == 0
        t0 = trio.current_time()
        await pause.wait(0.02)
        assert trio.current_time() - t0 >= 0.02
    finally:
        pause.close()


async def test_an_expiry_nobody_read_does_not_end_the_next_wait_early():
    """A cancelled wait leaves its timer to fire unread; the next wait re-arms it (which
    clears that expiry) and lasts its whole time."""
    pause = Pause()
    try:
        with trio.move_on_after(0.001):
            await pause.wait(0.002)
        await trio.sleep(0.01)  # the abandoned timer fires meanwhile, nobody reads it
        t0 = trio.current_time()
        await pause.wait(0.03)
        assert trio.current_time() - t0 >= 0.03
    finally:
        pause.close()


async def test_closed_and_used_again_a_pause_opens_a_new_timer():
    pause = Pause()
    await pause.wait(0.001)
    pause.close()
    await pause.wait(0.001)
    assert pause.uses_timerfd
    pause.close()


async def test_under_a_mock_clock_a_pause_is_virtual_time(autojump_clock):
    pause = Pause()
    t0 = trio.current_time()
    await pause.wait(LONG)  # returns at once in real time: the clock jumps
    assert trio.current_time() - t0 >= LONG and not pause.uses_timerfd
    pause.cut()  # nobody waits: nothing to cut
    assert pause.cuts == 0
    assert await _cut_while_waiting(pause) < LONG and pause.cuts == 1
    pause.close()
