"""The radio task: signal, operator and network registration, published on the link.

While the module serves (or has lost its registration), every `Timings.radio_poll` seconds it asks
AT+CSQ, the family's extended read-out (AT+QCSQ / AT+QENG, profile.signal_query), AT+COPS? and the
read form of every registration report the family has. Each command takes a background turn of
the socket scheduler (link.background_turn): data commands keep priority and at most one
bookkeeping query is out at a time. Registration URCs (+CREG/+CGREG/+CEREG/+C5GREG, enabled with
<n>=2 at init) arrive through the supervisor's URC watcher and are recorded at once.

"Registered" is decided by the PS domain reports (CGREG/CEREG/C5GREG): one of them 1 or 5 is
enough (an LTE module falling back to GPRS keeps serving). Every PS report the family has known
and none of them 1 or 5 while serving is a lost registration: `registration_lost` is set, the supervisor enters
State.REGISTRATION_LOST (no reboot: no manual asks for one) and polls every
`registration_lost_poll` until a report says 1 or 5 again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtError
from ..at.radio import csq_to_dbm
from ..at.urc import Registration
from .states import State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")

PS_KINDS = ("CGREG", "CEREG", "C5GREG")
WATCHED = (State.SERVING, State.REGISTRATION_LOST)


class RadioWatch:
    """Owns `link.radio` (RadioStats); tells the supervisor when registration is lost or back."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.stats = sup.link.radio
        self.registration_lost = trio.Event()    # set while registration is lost
        self.registration_back = trio.Event()    # set while registered (or not known lost)
        self.registration_back.set()

    # -- reports ------------------------------------------------------------------------------
    def on_registration(self, reg: Registration) -> None:
        """A registration URC or read response: record it, decide lost / back."""
        if reg.stat is None:
            return
        self.stats.registration[reg.kind] = reg
        ps = {k: r for k, r in self.stats.registration.items() if k in PS_KINDS}
        if any(r.registered for r in ps.values()):
            self.stats.registered = True
            self._back()
            return
        expected = [k for k in self.sup.profile.registration_kinds if k in PS_KINDS]
        if not ps or any(k not in ps for k in expected):
            return  # a domain not heard from yet may be the one that is registered
        self.stats.registered = False
        if self.sup.state in WATCHED:
            self._lost(reg)

    def _lost(self, reg: Registration) -> None:
        if self.registration_lost.is_set():
            return
        self.stats.losses += 1
        self.stats.lost_since = trio.current_time()
        log.warning("network registration lost while serving (+%s: stat %s)", reg.kind, reg.stat)
        self.registration_back = trio.Event()
        self.registration_lost.set()

    def _back(self) -> None:
        if not self.registration_lost.is_set():
            return
        lost_for = trio.current_time() - (self.stats.lost_since or trio.current_time())
        log.info("network registration back after %.0f s", lost_for)
        self.stats.lost_since = None
        self.registration_lost = trio.Event()
        self.registration_back.set()

    def reset(self) -> None:
        """A new module session: nothing known about the radio yet."""
        self.stats.registration.clear()
        self.stats.registered = None
        self._back()

    # -- polling ------------------------------------------------------------------------------
    async def run(self) -> None:
        """While serving (or registration lost): poll, then wait the period. Never returns."""
        t = self.sup.timings
        if t.radio_poll is None:
            return
        while True:
            await self.sup.wait_for_state(*WATCHED)
            at = self.sup.at
            if at is None:
                await trio.sleep(t.radio_poll)
                continue
            await self.poll(at)
            period = t.registration_lost_poll if self.registration_lost.is_set() else t.radio_poll
            await trio.sleep(period)

    async def poll(self, at) -> None:
        """One round of read-outs, each in its own background turn; a failure skips that one."""
        stats, link = self.stats, self.sup.link
        steps = [self._signal, self._quality, self._operator]
        steps += [self._registration(kind) for kind in at.profile.registration_kinds]
        failed = False
        for step in steps:
            try:
                async with link.background_turn("radio"):
                    await step(at)
            except AtError as exc:  # ERROR, lost, silent: the channel reports a silent module
                failed = True
                log.debug("radio poll: %s", exc)
        stats.poll_failures += failed
        stats.sampled_at = trio.current_time()
        stats.polls += 1

    async def _signal(self, at) -> None:
        self.stats.csq, self.stats.ber = await at.csq_report()
        self.stats.rssi_dbm = csq_to_dbm(self.stats.csq)

    async def _quality(self, at) -> None:
        self.stats.quality = await at.signal_quality()

    async def _operator(self, at) -> None:
        self.stats.operator = await at.operator()

    def _registration(self, kind: str):
        async def step(at) -> None:
            reg = await at.registration_report(kind)
            if reg is not None:
                self.on_registration(reg)
        return step


__all__ = ["RadioWatch"]


# -- the serving loop's hooks (pdp.py) ----------------------------------------------------------
async def until_registration_lost(sup: Supervisor, receive):
    """`await receive()`, or None as soon as registration is lost (whichever comes first)."""
    lost = sup.radio.registration_lost
    if lost.is_set():
        return None
    result = []
    async with trio.open_nursery() as nursery:

        async def wait_receive() -> None:
            result.append(await receive())
            nursery.cancel_scope.cancel()

        async def wait_lost() -> None:
            await lost.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(wait_receive)
        nursery.start_soon(wait_lost)
    return result[0] if result else None


async def ride_out_registration_loss(sup: Supervisor) -> None:
    """registration_lost: wait for the network (no reboot, sockets kept), then AT+QIACT? decides:
    for each context: it stayed up -> serving goes on; the network dropped it (or changed the
    address) -> that context is cycled (its sockets reset, AT+QIDEACT, AT+QIACT), as the periodic check does."""
    radio = sup.radio
    if not radio.registration_lost.is_set():
        return
    sup.enter(State.REGISTRATION_LOST, None, "waiting for the network")
    await radio.registration_back.wait()
    for pdp in sup.contexts:
        active, addrs = await pdp.query()
        if active and addrs and addrs == pdp.addresses:
            log.info("context %d survived the registration loss (%s): sockets kept",
                     pdp.context_id, ", ".join(addrs))
            continue
        await pdp.cycle("context_lost: AT+QIACT? after the registration loss shows the context "
                        + ("with a new address" if active and addrs else "inactive"))
