"""The health check tells a hung module from a busy one (emulator on a real pty, MockClock)."""

from __future__ import annotations

import trio

from modemd.supervisor.health import check

from .conftest import open_stack

TIMEOUT = 1.0


async def keep_queue_full(at, tasks: int, nursery) -> None:
    """`tasks` callers each sending `AT+CSQ` back to back: the channel queue never empties."""

    async def caller() -> None:
        while True:
            await at.run("AT+CSQ", timeout=30)

    for _ in range(tasks):
        nursery.start_soon(caller)


async def test_busy_module_passes_though_our_at_waits_longer_than_the_timeout(mock_clock):
    # 8 commands ahead at 0.3 s each: the AT is answered ~2.4 s after it was queued, while the
    # module answered something every 0.3 s (a saturated line behind a burst of QICLOSEs)
    async with open_stack("bg96", turnaround=0.3) as s, trio.open_nursery() as nursery:
        await keep_queue_full(s.at, 8, nursery)
        await trio.sleep(1.0)
        t0 = trio.current_time()
        assert await check(s.at, TIMEOUT) is True
        assert trio.current_time() - t0 > 2 * TIMEOUT  # it really did wait past the timeout
        nursery.cancel_scope.cancel()


async def test_silent_module_fails_after_the_timeout(mock_clock):
    async with open_stack("bg96") as s:
        s.emulator.hang(True)
        t0 = trio.current_time()
        assert await check(s.at, TIMEOUT) is False
        assert TIMEOUT <= trio.current_time() - t0 < TIMEOUT + 0.1


async def test_module_that_hangs_while_busy_fails_one_timeout_after_its_last_answer(mock_clock):
    async with open_stack("bg96", turnaround=0.3) as s, trio.open_nursery() as nursery:
        await keep_queue_full(s.at, 8, nursery)
        await trio.sleep(1.0)

        async def hang_soon() -> None:
            await trio.sleep(0.7)
            s.emulator.hang(True)

        nursery.start_soon(hang_soon)
        t0 = trio.current_time()
        assert await check(s.at, TIMEOUT) is False
        silent_for = trio.current_time() - s.channel.last_final
        assert TIMEOUT <= silent_for < TIMEOUT + 0.1
        assert trio.current_time() - t0 < 0.7 + TIMEOUT + 0.1
        nursery.cancel_scope.cancel()
