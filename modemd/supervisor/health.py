"""The periodic health command: `AT` every modem.health_interval, answered within health_timeout.

The deadline counts from the moment the check is queued, not from when the channel writes it: a
module that hangs in the middle of a transfer leaves the socket layer's command in flight (QISEND
may legitimately take 120 s), and the health `AT` queued behind it must still notice within
health_timeout. The deadline slides while the module answers the commands queued ahead (it is
busy, not hung: behind a burst of QICLOSEs on a saturated 921600 line the `AT` waited > 1 s for a
module that answered every ~180 ms); so the check fails when the module was silent for
health_timeout while our `AT` waited, or when our `AT`, once written, went unanswered for
health_timeout. A late answer is inconclusive while one of the manual's blocking commands (QIACT
150 s, QIDEACT 40 s, QICLOSE 10 s, QPOWD, CFUN, COPS) is in flight: their own deadline decides.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtCommandError, AtTimeout, ChannelClosed
from ..at.commands import QuectelAt
from .states import State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")

BLOCKING_COMMANDS = frozenset({
    "AT+QIACT", "AT+QIDEACT", "AT+QIACTEX", "AT+QIDEACTEX", "AT+QICLOSE", "AT+QPOWD", "AT+CFUN",
    "AT+COPS", "AT+CGACT",
})


async def check(at: QuectelAt, timeout: float) -> bool | None:
    """True: the module answered; False: it was silent for `timeout` while our `AT` waited;
    None: inconclusive (a blocking command in flight)."""
    outcome: list[bool] = []
    done = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_ask, at, timeout, outcome, done)
        deadline = trio.current_time() + timeout
        while True:
            with trio.move_on_at(deadline):
                await done.wait()
            # the deadline slides while the module answers commands queued ahead of ours
            deadline = at.channel.last_final + timeout
            if done.is_set() or trio.current_time() >= deadline:
                break
        nursery.cancel_scope.cancel()
    if outcome:
        return outcome[0]
    in_flight = at.channel.protocol.in_flight
    if in_flight is not None and in_flight.name in BLOCKING_COMMANDS:
        return None
    return False


async def _ask(at: QuectelAt, timeout: float, outcome: list[bool], done: trio.Event) -> None:
    try:
        await at.at(timeout=timeout)
        outcome.append(True)
    except AtCommandError:
        outcome.append(True)
    except (AtTimeout, ChannelClosed):
        outcome.append(False)
    done.set()


async def health_loop(sup: Supervisor) -> None:
    """While serving: one check per health_interval; a missed answer asks for a reboot."""
    interval = sup.cfg.modem.health_interval
    timeout = sup.cfg.modem.health_timeout
    while True:
        await sup.wait_for_state(State.SERVING)  # no ticking through long back-offs
        await trio.sleep(interval)
        if sup.state is not State.SERVING or sup.port_lost is not None:
            continue
        at = sup.at
        ok = await check(at, timeout)
        sup.health_checks += 1
        if ok is False and sup.state is State.SERVING and at is sup.at:
            sup.health_failures += 1
            log.error("module did not answer the health AT within %g s", timeout)
            sup.fire_reboot(f"no_answer: health check AT unanswered for {timeout:g} s")
        elif ok:
            sup.refresh_status()
