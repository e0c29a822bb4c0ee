"""The reboot ladder: each step has its own success check and budget, and every step is recorded.

The ladder starts at the bottom and a successful step ends it. When the AT channel found the module
silent, the supervisor runs step 1 alone first (`resync_outcome`): a module that answers is alive and
the ladder ends there (no reboot, no back-off, sockets stay). Only a module that stays silent goes on
to step 3 (`run(resynced=True)`: QPOWD is pointless, nothing would answer it). A flowchart rule that
says "reboot the module" runs the whole ladder: resync decides whether QPOWD can be asked for.

1. resync        `AT` probes up to `resync_attempts` times (probe_timeout each)   -> answered?
2. qpowd         `AT+QPOWD=1`, wait for `POWERED DOWN` (powered_down_timeout)    -> powered down?
   (software only, power.backend = none: `AT+CFUN=1,1` instead, then wait for RDY: a module that
   was switched off by QPOWD could not be switched on again)
3. supply_cut    supply off for power.supply_off_seconds (12 s), on again        -> backend OK?
4. pwrkey        PWRKEY held for power.pwrkey_seconds (2 s)                      -> backend OK?
5. wait_ready    `RDY` or an answer within boot_timeout                          -> booted?
   if not, and PWRKEY is wired: the pulse may have switched a hung module *off*; pulse again and
   wait once more.

Steps that need the serial port are skipped when it is gone (a USB module that powers down takes
its tty with it); the hardware steps run regardless, and `wait_ready` continues after the port is
reopened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtCommandError, AtModuleReset, AtTimeout, ChannelClosed
from ..at.commands import CFUN, QPOWD
from .bringup import wait_ready
from .power import PowerError, power_cycle
from .states import State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")

READY = "ready"
PORT_LOST = "port_lost"
FAILED = "failed"
ALIVE = "alive"   # the resync probe was answered: nothing to reboot
RESET = "reset"   # RDY during the resync: the module rebooted by itself


@dataclass(frozen=True)
class StepResult:
    step: str
    ok: bool
    seconds: float
    note: str = ""


class Ladder:
    """One run of the ladder; `steps` is what happened (also kept as `sup.last_ladder`)."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.steps: list[StepResult] = []

    def _record(self, step: str, ok: bool, started: float, note: str = "") -> bool:
        result = StepResult(step, ok, trio.current_time() - started, note)
        self.steps.append(result)
        self.sup.ladder_steps[step] += 1
        if not ok:
            self.sup.ladder_failures[step] += 1
        log.log(
            logging.INFO if ok else logging.WARNING, "reboot ladder: %s %s after %.1f s%s",
            step, "succeeded" if ok else "failed", result.seconds, f" ({note})" if note else "",
        )
        return ok

    def _enter(self, step: str, budget: float) -> float:
        self.sup.enter(State.REBOOTING, budget, step)
        return trio.current_time()

    # -- steps ------------------------------------------------------------------------------------
    async def resync(self) -> bool:
        return await self.resync_outcome() in (ALIVE, RESET)

    async def resync_outcome(self) -> str:
        """ALIVE, RESET, PORT_LOST or FAILED (every probe unanswered)."""
        sup = self.sup
        timeout = sup.timings.probe_timeout
        attempts = sup.timings.resync_attempts
        self.sup.enter(State.RECOVERING, attempts * timeout, "AT resync")
        started = trio.current_time()
        for _ in range(attempts):
            try:
                if await sup.at.probe(timeout):
                    self._record("resync", True, started)
                    return ALIVE
            except AtModuleReset:
                self._record("resync", True, started, "the module reset itself (RDY)")
                return RESET
            except ChannelClosed:
                self._record("resync", False, started, "serial port gone")
                return PORT_LOST
        self._record("resync", False, started, f"{attempts} x AT unanswered")
        return FAILED

    async def qpowd(self) -> bool:
        sup = self.sup
        budget = sup.timings.powered_down_timeout
        started = self._enter(QPOWD, budget)
        mark = sup.powered_downs
        with trio.move_on_after(budget):
            try:
                await sup.at.qpowd()
            except AtCommandError as exc:
                return self._record("qpowd", False, started, exc.response.final)
            except AtTimeout:
                return self._record("qpowd", False, started, "no OK")
            except AtModuleReset:
                pass  # POWERED DOWN came before OK: wait for it to be counted below
            except ChannelClosed:
                return self._record("qpowd", True, started, "serial port gone")
            while sup.powered_downs == mark and sup.port_lost is None:
                await sup.powered_down_event.wait()
            return self._record("qpowd", True, started, "POWERED DOWN")
        return self._record("qpowd", False, started, f"no POWERED DOWN in {budget:g} s")

    async def cfun_reset(self) -> bool:
        sup = self.sup
        started = self._enter(f"{CFUN}=1,1", sup.profile.timeout(CFUN))
        try:
            await sup.at.cfun(1, reset=True)
            return self._record("cfun_reset", True, started)
        except AtCommandError as exc:
            return self._record("cfun_reset", False, started, exc.response.final)
        except AtTimeout:
            return self._record("cfun_reset", False, started, "no answer")
        except ChannelClosed:
            return self._record("cfun_reset", True, started, "serial port gone")

    async def supply_cut(self) -> bool:
        power = self.sup.power
        seconds = power.supply_off_seconds
        started = self._enter(f"supply cut for {seconds:g} s", seconds + 70.0)
        try:
            await power_cycle(power, seconds)
            return self._record("supply_cut", True, started)
        except PowerError as exc:
            return self._record("supply_cut", False, started, str(exc))

    async def pwrkey(self) -> bool:
        power = self.sup.power
        started = self._enter("PWRKEY pulse", power.pwrkey_seconds + 35.0)
        try:
            await self.sup.pwrkey_pulse()
            return self._record("pwrkey", True, started)
        except PowerError as exc:
            return self._record("pwrkey", False, started, str(exc))

    async def wait_ready(self, since: int) -> str:
        sup = self.sup
        budget = sup.timings.boot_timeout
        started = self._enter("waiting for RDY", budget)
        how = await wait_ready(sup, budget, since)
        if how is not None:
            self._record("wait_ready", True, started, how)
            return READY
        if sup.port_lost is not None:
            self._record("wait_ready", False, started, "serial port gone: waiting for it")
            return PORT_LOST
        self._record("wait_ready", False, started, f"no RDY in {budget:g} s")
        return FAILED

    # -- the whole ladder ---------------------------------------------------------------------------
    async def run(self, *, resynced: bool = False) -> str:
        """READY (the module booted), PORT_LOST (reopen the tty, then wait) or FAILED.
        `resynced`: the supervisor's resync just found the module silent (no second one)."""
        sup, power = self.sup, self.sup.power
        hardware = power.has_supply or power.has_pwrkey
        answered = False
        if sup.port_lost is None and not resynced:
            answered = await self.resync()
        if not hardware:
            if not answered:
                log.error(
                    "the module does not answer and power.backend = %s offers no hardware reset; "
                    "retrying later (software steps only: AT+QPOWD / AT+CFUN)", power.name,
                )
                return FAILED
            mark = sup.boots
            if not await self.cfun_reset():
                return FAILED
            return await self.wait_ready(mark)
        if answered:
            await self.qpowd()
        mark = sup.boots
        if power.has_supply:
            await self.supply_cut()
        if power.has_pwrkey:
            await self.pwrkey()
        outcome = await self.wait_ready(mark)
        if outcome == FAILED and power.has_pwrkey:
            # the first pulse may have switched a hung (but powered) module off
            mark = sup.boots
            await self.pwrkey()
            outcome = await self.wait_ready(mark)
        return outcome
