"""The health check tells a hung module from a busy one (emulator on a real pty, MockClock)."""

from __future__ import annotations

import trio

from modemd.at.channel import PROBE_TIMEOUT, PROBES, QUIET_MAX, AtError
from modemd.profiles.base import FAST
from modemd.supervisor.health import check

from .conftest import open_stack

TIMEOUT = 1.0


async def keep_queue_full(at, tasks: int, nursery) -> None:
    """`tasks` callers each sending `AT+CSQ` back to back: the channel queue never empties."""

    async def caller() -> None:
        while True:
            try:
                await at.run("AT+CSQ", prefix="+CSQ:", timeout=30)
            except AtError:  # the module hung: the channel reported it
                return

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


async def test_silent_module_fails_after_the_probe_series(mock_clock):
    async with open_stack("bg96") as s:
        s.emulator.hang(True)
        t0 = trio.current_time()
        assert await check(s.at, 5.0) is False
        took = trio.current_time() - t0
        assert FAST + PROBES * PROBE_TIMEOUT <= took < FAST + QUIET_MAX + PROBES * PROBE_TIMEOUT
        assert s.at.module_silent


async def test_lost_health_at_is_not_a_failure(mock_clock):
    async with open_stack("bg96") as s:
        s.emulator.lose_command("AT")          # the health AT never reaches the module
        assert await check(s.at, 5.0) is True  # ... but the channel's probe is answered
        assert s.channel.commands_lost == 1 and not s.at.module_silent


async def test_module_that_hangs_while_busy_fails_through_the_command_in_flight(mock_clock):
    async with open_stack("bg96", turnaround=0.3) as s, trio.open_nursery() as nursery:
        await keep_queue_full(s.at, 8, nursery)
        await trio.sleep(1.0)

        async def hang_soon() -> None:
            await trio.sleep(0.7)
            s.emulator.hang(True)

        nursery.start_soon(hang_soon)
        t0 = trio.current_time()
        assert await check(s.at, TIMEOUT) is False  # our AT waits behind a CSQ never answered
        silent_for = trio.current_time() - s.channel.last_final
        assert silent_for < 0.3 + FAST + QUIET_MAX + PROBES * PROBE_TIMEOUT
        assert trio.current_time() - t0 < 0.7 + 0.3 + FAST + QUIET_MAX + PROBES * PROBE_TIMEOUT
        nursery.cancel_scope.cancel()
