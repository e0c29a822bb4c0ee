"""The AT reader's pause between reads of a stream (modemd/pause.py): a timerfd under the real
clock, a trio timeout under a MockClock; either way it lasts its time unless cut short."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from modemd.pause import Pause

LONG = 60.0  # s: a wait that only a cut (or the test's failure deadline) ends


@pytest.fixture
def pause():
    p = Pause()
    yield p
    p.close()


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


async def _lasts(pause: Pause, seconds: float) -> bool:
    t0 = trio.current_time()
    await pause.wait(seconds)
    return trio.current_time() - t0 >= seconds


async def test_under_the_real_clock_a_pause_is_a_timerfd_that_lasts_its_time(pause):
    assert await _lasts(pause, 0.003)
    assert pause.uses_timerfd


async def test_a_cut_ends_the_wait_in_progress_at_once(pause):
    with trio.fail_after(LONG / 2):  # a cut that did not work fails here, not by a timing
        await _cut_while_waiting(pause)
    assert pause.cuts == 1


async def test_a_cut_with_nobody_waiting_does_not_shorten_the_next_wait(pause):
    await pause.wait(0.001)  # opens the timer
    pause.cut()
    assert pause.cuts == 0
    assert await _lasts(pause, 0.02)


async def test_an_expiry_nobody_read_does_not_end_the_next_wait_early(pause):
    """A cancelled wait leaves its timer to fire unread; the next wait re-arms it (which
    clears that expiry) and lasts its whole time."""
    with trio.move_on_after(0.001):
        await pause.wait(0.002)
    await trio.sleep(0.01)  # the abandoned timer fires meanwhile, nobody reads it
    assert await _lasts(pause, 0.03)


async def test_closed_and_used_again_a_pause_opens_a_new_timer(pause):
    await pause.wait(0.001)
    pause.close()
    await pause.wait(0.001)
    assert pause.uses_timerfd


async def test_under_a_mock_clock_a_pause_is_virtual_time(autojump_clock, pause):
    assert await _lasts(pause, LONG)  # at once in real time: the clock jumps
    assert not pause.uses_timerfd
    pause.cut()  # nobody waits: nothing to cut
    assert pause.cuts == 0
    assert await _cut_while_waiting(pause) < LONG and pause.cuts == 1
