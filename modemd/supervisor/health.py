"""The periodic health command: `AT` every modem.health_interval while serving.

The health check only puts a command on the line: the AT channel decides whether the module is
alive. The `AT` has an expected response time (profile data, a "300 ms" command); past it the
channel probes. A lost health `AT` (the probe answered: CommandLost) is not a failure, the module is
alive. A module that answers nothing fails the check: the channel's probe series went unanswered
and the channel itself reported the silence to the supervisor (the one route for command timeouts),
so the health check never asks for a reboot on its own. The check also fails when our `AT` is queued
behind a command whose probe series went unanswered (the channel holds its queue then). A busy
module (our `AT` waits behind a burst of commands that are answered) passes, however long it waits;
behind one of the manual's blocking commands (QIACT 150 s, QIDEACT 40 s ...) the check waits for
that command's own deadline, which the flowchart decides.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtCommandError, AtTimeout, ChannelClosed, CommandLost
from ..at.commands import QuectelAt
from .states import State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")


async def check(at: QuectelAt, timeout: float) -> bool | None:
    """True: the module answered (a lost `AT` counts: the channel's probe was answered);
    False: the channel found the module silent; None: inconclusive (the channel was replaced)."""
    outcome: list[bool | None] = []
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            try:
                await at.at(timeout=timeout)
                outcome.append(True)
            except (AtCommandError, CommandLost):
                outcome.append(True)  # an ERROR is an answer; a lost AT: the probe was answered
            except AtTimeout:
                outcome.append(False)
            except ChannelClosed:
                outcome.append(None)
            nursery.cancel_scope.cancel()

        async def silence() -> None:
            await at.wait_silent()  # our AT waits behind a command the module never answered
            outcome.append(False)
            nursery.cancel_scope.cancel()

        nursery.start_soon(ask)
        nursery.start_soon(silence)
    return outcome[0] if outcome else None


async def health_loop(sup: Supervisor) -> None:
    """While serving: one check per health_interval (the channel reports a silent module)."""
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
        if ok is False and at is sup.at:
            sup.health_failures += 1  # the channel reported the silence (the one route)
            log.error("module did not answer the health AT nor the channel's probes")
        elif ok:
            sup.refresh_status()
