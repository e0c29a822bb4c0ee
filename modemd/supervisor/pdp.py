"""The PDP context as a supervised resource (seeds-comparison §2.1, §7 items 28, 34, 35, 38).

- activation: AT+QIACT? first (a context left active by a previous run is kept), else AT+QIACT
  (150 s; no answer -> reboot); ERROR -> AT+QIDEACT, wait, retry; 3 ERRORs in a row -> reboot;
  AT+QIACT? gives the address(es) -> `link.context_up`.
- deactivation: `link.context_down` first (every socket of the context is reset at once), then
  AT+QIDEACT (40 s; no answer -> reboot); ERROR -> retry; 3 failures in a row -> reboot.
- while serving: `+QIURC: "pdpdeact"` and the socket layer's "5 consecutive failed QIOPEN" both
  cycle the context (QIDEACT + QIACT); every `pdp_check_interval` AT+QIACT? confirms it is still
  active and its address unchanged.

Families without QIACT (BC25/BC32) use AT+CGACT / AT+CGACT? / AT+CGPADDR instead.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import TYPE_CHECKING

import trio

from ..at.channel import AtCommandError, AtTimeout
from .bringup import query
from .radio import ride_out_registration_loss, until_registration_lost
from .states import RebootNeeded, State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")


class PdpKeeper:
    """Keeps `cfg.pdp.context_id` active; counters are attributes for metrics."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.context_id: int = sup.cfg.pdp.context_id
        self.addresses: tuple[str, ...] = ()
        self.activation_failures = 0     # consecutive AT+QIACT ERRORs
        self.deactivation_failures = 0   # consecutive AT+QIDEACT ERRORs
        self.activations = 0
        self.deactivations = 0
        self.cycles: Counter[str] = Counter()   # context cycles by reason kind
        self.up_since: float | None = None
        self._requests_in, self._requests = trio.open_memory_channel(math.inf)

    # -- requests from URCs and the socket layer ------------------------------------------------
    def request_cycle(self, reason: str) -> None:
        """Deactivate and re-activate the context as soon as the serving loop can."""
        self._requests_in.send_nowait(reason)

    def _drain(self) -> None:
        while True:
            try:
                self._requests.receive_nowait()
            except trio.WouldBlock:
                return

    # -- AT helpers -------------------------------------------------------------------------------
    async def query(self) -> tuple[bool, tuple[str, ...]]:
        """(active, addresses) of our context, by AT+QIACT? (or AT+CGACT?/AT+CGPADDR)."""
        at, t, cid = self.sup.at, self.sup.timings, self.context_id
        if self.sup.profile.has_qiact:
            for f in await query(at, "AT+QIACT?", "+QIACT:", t.query_timeout):
                if f and f[0] == str(cid):
                    return f[1] == "1", tuple(x for x in f[3:] if x)
            return False, ()
        active = False
        for f in await query(at, "AT+CGACT?", "+CGACT:", t.query_timeout):
            if len(f) >= 2 and f[0] == str(cid):
                active = f[1] == "1"
        if not active:
            return False, ()
        rows = await query(at, f"AT+CGPADDR={cid}", "+CGPADDR:", t.query_timeout)
        addrs = tuple(x for f in rows if f and f[0] == str(cid) for x in f[1:] if x)
        return True, addrs

    async def _activate_command(self) -> None:
        at, cid = self.sup.at, self.context_id
        if self.sup.profile.has_qiact:
            await at.qiact(cid)
        else:
            await at.run(f"AT+CGACT=1,{cid}")

    async def _deactivate_command(self) -> None:
        at, cid = self.sup.at, self.context_id
        if self.sup.profile.has_qiact:
            await at.qideact(cid)
        else:
            await at.run(f"AT+CGACT=0,{cid}")

    def _activate_name(self) -> str:
        return "AT+QIACT" if self.sup.profile.has_qiact else "AT+CGACT"

    # -- activation / deactivation ----------------------------------------------------------------
    async def activate(self) -> tuple[str, ...]:
        """activating: the context is up (link.context_up) or RebootNeeded."""
        sup, t = self.sup, self.sup.timings
        name = self._activate_name()
        deadline = sup.profile.timeout(name)
        self._drain()  # requests about an earlier activation are moot
        while True:
            sup.enter(State.ACTIVATING, deadline + 2 * t.query_timeout)
            active, addrs = await self.query()
            if active and addrs:
                log.info("context %d already active (%s)", self.context_id, ", ".join(addrs))
                break
            try:
                await self._activate_command()
            except AtTimeout:
                raise RebootNeeded(
                    f"qiact_timeout: no answer to {name} in {deadline:g} s"
                ) from None
            except AtCommandError as exc:
                failure = exc.response.final
            else:
                active, addrs = await self.query()
                if active and addrs:
                    break
                failure = f"{name}? shows no address"
            self.activation_failures += 1
            log.warning(
                "activating context %d failed (%s), %d time(s) in a row",
                self.context_id, failure, self.activation_failures,
            )
            if self.activation_failures >= t.activation_failures:
                self.activation_failures = 0
                raise RebootNeeded(
                    f"activation_failed: {name}={self.context_id} failed "
                    f"{t.activation_failures} times in a row ({failure})"
                )
            await self.deactivate("activation failed")
            sup.enter(
                State.ACTIVATING, t.activation_retry_delay,
                f"retry in {t.activation_retry_delay:g} s",
            )
            await trio.sleep(t.activation_retry_delay)
        self.activation_failures = 0
        self.activations += 1
        self.addresses = addrs
        self.up_since = trio.current_time()
        sup.link.context_up(self.context_id, addrs)
        log.info("context %d active: %s", self.context_id, ", ".join(addrs))
        return addrs

    async def deactivate(self, why: str) -> None:
        """deactivating: sockets reset, then AT+QIDEACT until it succeeds or a rule says reboot."""
        sup, t = self.sup, self.sup.timings
        sup.link.context_down(self.context_id)
        self.addresses = ()
        self.up_since = None
        deadline = sup.profile.timeout("AT+QIDEACT" if sup.profile.has_qiact else "AT+CGACT")
        while True:
            sup.enter(State.DEACTIVATING, deadline, why)
            try:
                await self._deactivate_command()
            except AtTimeout:
                raise RebootNeeded(
                    f"qideact_timeout: no answer to AT+QIDEACT in {deadline:g} s"
                ) from None
            except AtCommandError as exc:
                self.deactivation_failures += 1
                log.warning(
                    "deactivating context %d failed (%s), %d time(s) in a row",
                    self.context_id, exc.response.final, self.deactivation_failures,
                )
                if self.deactivation_failures >= t.deactivation_failures:
                    self.deactivation_failures = 0
                    raise RebootNeeded(
                        f"deactivation_failed: AT+QIDEACT={self.context_id} failed "
                        f"{t.deactivation_failures} times in a row"
                    ) from None
                await trio.sleep(t.deactivation_retry_delay)
                continue
            self.deactivation_failures = 0
            self.deactivations += 1
            return

    async def cycle(self, reason: str) -> None:
        """QIDEACT + QIACT (pdpdeact, repeated QIOPEN failures, context found inactive)."""
        kind = reason.split(":", 1)[0]
        self.cycles[kind] += 1
        log.warning("cycling context %d: %s", self.context_id, reason)
        self.sup.schedule.interrupted(trio.current_time())
        await self.deactivate(kind)
        await self.activate()

    # -- serving ------------------------------------------------------------------------------------
    async def serve(self) -> None:
        """serving: react to cycle requests, check AT+QIACT? periodically. Never returns."""
        sup, t = self.sup, self.sup.timings
        while True:
            await ride_out_registration_loss(sup)
            sup.enter(State.SERVING, None)
            sup.schedule.serving(trio.current_time())
            reason = None
            with trio.move_on_after(t.pdp_check_interval):
                reason = await until_registration_lost(sup, self._requests.receive)
            if sup.radio.registration_lost.is_set():
                if reason is not None:
                    self.request_cycle(reason)  # decided once the network is back
                continue
            if reason is not None:
                await self.cycle(reason)
                continue
            active, addrs = await self.query()
            if not active or not addrs:
                await self.cycle("context_lost: AT+QIACT? shows the context inactive")
            elif addrs != self.addresses:
                log.warning(
                    "context %d changed address %s -> %s: resetting its sockets",
                    self.context_id, ", ".join(self.addresses), ", ".join(addrs),
                )
                sup.link.context_down(self.context_id)
                self.addresses = addrs
                sup.link.context_up(self.context_id, addrs)
