"""The PDP context as a supervised resource (seeds-comparison §2.1, §7 items 28, 34, 35, 38).

- activation: AT+QIACT? first (a context left active by a previous run is kept, unless AT+QICSGP held
  other settings than [pdp]'s before configure() wrote them: then it is activated again), else AT+QIACT
  (150 s; no answer -> reboot); ERROR -> AT+QIDEACT, wait, retry; 3 ERRORs in a row -> reboot;
  AT+QIACT? gives the address(es) -> `link.context_up`.
- deactivation: `link.context_down` first (every socket of the context is reset at once), then
  AT+QIDEACT (40 s; no answer -> reboot); ERROR -> retry; 3 failures in a row -> reboot.
- while serving: `+QIURC: "pdpdeact"` and the socket layer's "5 consecutive failed QIOPEN" both
  cycle the context (QIDEACT + QIACT); every `pdp_check_interval` AT+QIACT? confirms it is still
  active and its address unchanged.
- settings: `configure()` writes AT+QICSGP with `wanted` (the config's [pdp], replaced by a reload
  through `apply()`); once QIACT succeeds after it, they are `in_effect` (what status shows). New
  settings while serving re-cycle the context with QICSGP in between (QIDEACT -> QICSGP -> QIACT),
  as does `modemctl reconnect`; before serving, the next configure step simply uses them.

Several contexts ([[pdp]]): one keeper per context, each by the flowchart above; the one serving
loop (`serve()`) takes each keeper's requests in turn (AT commands run one at a time anyway), so a
pdpdeact of context 2 cycles context 2 only while context 1's sockets carry on. The supervisor's
state is the one enum: while one context cycles it shows deactivating/activating with the context
in its detail; `link.serving(ctx)` stays true for the others. DNS servers (`dns`) are set with
AT+QIDNSCFG after each activation, before the context is published as up.

Families without QIACT (BC25/BC32) use AT+CGACT / AT+CGACT? / AT+CGPADDR instead.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import trio

from ..at.channel import AtCommandError, AtTimeout, CommandLost
from ..at.commands import CGACT_READ, QIACT_READ, StoredContext, cgpaddr_read
from .bringup import query
from .radio import ride_out_registration_loss, until_registration_lost
from .states import RebootNeeded, State

if TYPE_CHECKING:  # pragma: no cover
    from .supervisor import Supervisor

log = logging.getLogger("modemd.supervisor")


@dataclass(frozen=True)
class PdpSettings:
    """The PDP settings in effect, as status shows them: never the credentials themselves."""

    context_id: int
    apn: str
    auth: str
    ip_type: str


class CycleRequests:
    """Every keeper's cycle requests, in order, for the one serving loop."""

    def __init__(self) -> None:
        self._queue: deque[tuple[PdpKeeper, str, bool]] = deque()
        self._event = trio.Event()

    def put(self, keeper: PdpKeeper, reason: str, configure: bool) -> None:
        self._queue.append((keeper, reason, configure))
        self._event.set()

    def take(self) -> tuple[PdpKeeper, str, bool] | None:
        return self._queue.popleft() if self._queue else None

    def drop(self, keeper: PdpKeeper) -> None:
        """Requests about an earlier activation of `keeper`'s context are moot."""
        self._queue = deque(r for r in self._queue if r[0] is not keeper)

    async def wait(self) -> None:
        while not self._queue:
            if self._event.is_set():
                self._event = trio.Event()
            await self._event.wait()


class PdpKeeper:
    """Keeps one configured context active; counters are attributes for metrics."""

    def __init__(
        self, sup: Supervisor, pdp: Any, requests: CycleRequests, key: str = "pdp"
    ) -> None:
        self.sup = sup
        self.key = key                   # "pdp" or "pdp[1]": how status and reload name it
        self.context_id: int = pdp.context_id
        self.wanted: Any = pdp           # a PdpConfig: what the next AT+QICSGP writes
        self.in_effect: Any = pdp        # what the context was last activated with
        self._configured: Any = pdp      # what the last AT+QICSGP wrote
        self._found: StoredContext | None = None  # what AT+QICSGP held before that write
        self.addresses: tuple[str, ...] = ()
        self.activation_failures = 0     # consecutive AT+QIACT ERRORs
        self.deactivation_failures = 0   # consecutive AT+QIDEACT ERRORs
        self.activations = 0
        self.deactivations = 0
        self.cycles: Counter[str] = Counter()   # context cycles by reason kind
        self.up_since: float | None = None
        self._requests = requests

    # -- settings ---------------------------------------------------------------------------------
    @property
    def effective(self) -> PdpSettings:
        e = self.in_effect
        return PdpSettings(self.context_id, e.apn, e.auth, e.ip_type)

    @property
    def pending(self) -> tuple[str, ...]:
        """The [pdp] keys a reload changed that the context does not use yet."""
        return tuple(
            f"{self.key}.{f.name}" for f in fields(self.wanted)
            if getattr(self.wanted, f.name) != getattr(self.in_effect, f.name)
        )

    def apply(self, settings: Any) -> None:
        """New [pdp] settings (same context_id): used by the next configure step; while serving
        the context is re-cycled with them at once."""
        if settings.context_id != self.context_id:
            raise ValueError("pdp.context_id cannot change while running")
        if settings == self.wanted:
            return
        changed = [f.name for f in fields(settings)
                   if getattr(settings, f.name) != getattr(self.wanted, f.name)]
        self.wanted = settings
        keys = ", ".join(f"{self.key}.{name}" for name in changed)
        self.request_cycle(f"reload: {keys} changed", configure=True)

    async def configure(self, *, look_first: bool = False) -> None:
        """AT+QICSGP (APN, credentials, auth, IP type); credentials never reach a log line.
        `look_first` (bring-up, where the context may still be active from before): read what
        the module holds first, for activate() to tell whether that activation fits [pdp]."""
        sup, pdp = self.sup, self.wanted
        sup.enter(State.CONFIGURING, 30.0, self._detail(""))
        at = sup.at
        log.info(
            "configuring context %d: APN %r, auth %s, %s%s", pdp.context_id, pdp.apn, pdp.auth,
            pdp.ip_type, ", with credentials" if pdp.username else "",
        )
        try:
            if sup.profile.has_qicsgp:
                self._found = await self._stored() if look_first else None
                await at.qicsgp(
                    pdp.context_id, pdp.apn, pdp.username, pdp.password, pdp.auth, pdp.ip_type
                )
            else:  # BC25/BC32: no QICSGP; the APN goes through AT+CGDCONT
                await at.cgdcont(pdp.context_id, pdp.apn, pdp.ip_type)
        except AtCommandError as exc:
            log.error("configuring context %d refused: %s", pdp.context_id, exc.response.final)
            if pdp != self._configured:  # the module keeps the previous ones: say so, no loop
                log.error("the reloaded [pdp] settings are not in effect: context %d keeps the "
                          "previous ones", pdp.context_id)
                self.wanted = self._configured
            return
        self._configured = pdp

    async def _stored(self) -> StoredContext | None:
        """What the module holds for the context before modemd writes its own: a context found
        active was activated with it (None: not readable)."""
        try:
            return await self.sup.at.qicsgp_read(self.context_id)
        except (AtCommandError, CommandLost) as exc:
            log.info("context %d: its stored settings are not readable (%s)", self.context_id, exc)
            return None

    def _stale(self, found: StoredContext | None) -> str:
        """Why a context found active must be activated again ("": keep it): it was activated
        before modemd configured it (another run of it, a person) with other settings than
        [pdp]'s, which status would otherwise show as in effect."""
        if found is None:
            return ""
        pdp = self.wanted
        differ = [name for name in ("apn", "username", "auth", "ip_type")
                  if getattr(found, name) != getattr(pdp, name)]
        if not differ:
            return ""
        return (f"active with other settings than {self.key} ({', '.join(differ)}; APN "
                f"{found.apn!r})")

    # -- requests from URCs, the socket layer, reload and modemctl reconnect ----------------------
    def request_cycle(self, reason: str, *, configure: bool = False) -> None:
        """Deactivate and re-activate the context as soon as the serving loop can; `configure`:
        write AT+QICSGP in between (reload, modemctl reconnect)."""
        self._requests.put(self, reason, configure)

    def _detail(self, detail: str) -> str:
        """The state's detail names the context when there are several."""
        if len(self.sup.contexts) < 2:
            return detail
        return f"context {self.context_id}: {detail}" if detail else f"context {self.context_id}"

    # -- AT helpers -------------------------------------------------------------------------------
    async def query(self) -> tuple[bool, tuple[str, ...]]:
        """(active, addresses) of our context, by AT+QIACT? (or AT+CGACT?/AT+CGPADDR)."""
        at, t, cid = self.sup.at, self.sup.timings, self.context_id
        if self.sup.profile.has_qiact:
            for f in await query(at, *QIACT_READ, t.query_timeout):
                if f and f[0] == str(cid):
                    return f[1] == "1", tuple(x for x in f[3:] if x)
            return False, ()
        active = False
        for f in await query(at, *CGACT_READ, t.query_timeout):
            if len(f) >= 2 and f[0] == str(cid):
                active = f[1] == "1"
        if not active:
            return False, ()
        rows = await query(at, *cgpaddr_read(cid), t.query_timeout)
        addrs = tuple(x for f in rows if f and f[0] == str(cid) for x in f[1:] if x)
        return True, addrs

    # -- activation / deactivation ----------------------------------------------------------------
    async def activate(self) -> tuple[str, ...]:
        """activating: the context is up (link.context_up) or RebootNeeded."""
        sup, t = self.sup, self.sup.timings
        name = sup.at.activate_command
        deadline = sup.profile.timeout(name)
        self._requests.drop(self)  # requests about an earlier activation are moot
        found, self._found = self._found, None  # what the module held before configure()
        while True:
            sup.enter(State.ACTIVATING, deadline + 2 * t.query_timeout, self._detail(""))
            active, addrs = await self.query()
            stale = self._stale(found) if active else ""
            found = None  # only a context found active at the first look was not ours
            if stale:
                log.warning("context %d is %s: activating it again with the configured ones",
                            self.context_id, stale)
                await self.deactivate(f"stale: {stale}")
                continue
            if active and addrs:
                log.info("context %d already active (%s)", self.context_id, ", ".join(addrs))
                break
            try:
                await sup.at.activate(self.context_id)
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
                self._detail(f"retry in {t.activation_retry_delay:g} s"),
            )
            await trio.sleep(t.activation_retry_delay)
        self.activation_failures = 0
        await self._set_dns()
        self.activations += 1
        self.in_effect = self._configured
        self.addresses = addrs
        self.up_since = trio.current_time()
        sup.link.context_up(self.context_id, addrs)
        log.info("context %d active: %s", self.context_id, ", ".join(addrs))
        return addrs

    async def _set_dns(self) -> None:
        """AT+QIDNSCFG with the configured servers; a refusal is logged, the context serves on
        with the network's servers."""
        dns = self._configured.dns
        if not dns:
            return
        try:
            await self.sup.at.qidnscfg(self.context_id, *dns)
        except (AtCommandError, ValueError) as exc:
            why = exc.response.final if isinstance(exc, AtCommandError) else str(exc)
            log.error("context %d: DNS servers %s refused (%s): the network's are used",
                      self.context_id, ", ".join(dns), why)
        else:
            log.info("context %d: DNS servers %s", self.context_id, ", ".join(dns))

    async def deactivate(self, why: str) -> None:
        """deactivating: sockets reset, then AT+QIDEACT until it succeeds or a rule says reboot."""
        sup, t = self.sup, self.sup.timings
        sup.link.context_down(self.context_id)
        self.addresses = ()
        self.up_since = None
        name = sup.at.deactivate_command
        deadline = sup.profile.timeout(name)
        while True:
            sup.enter(State.DEACTIVATING, deadline, self._detail(why))
            try:
                await sup.at.deactivate(self.context_id)
            except AtTimeout:
                raise RebootNeeded(
                    f"qideact_timeout: no answer to {name} in {deadline:g} s"
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
                        f"deactivation_failed: {name}={self.context_id} failed "
                        f"{t.deactivation_failures} times in a row"
                    ) from None
                await trio.sleep(t.deactivation_retry_delay)
                continue
            self.deactivation_failures = 0
            self.deactivations += 1
            return

    async def cycle(self, reason: str, *, configure: bool = False) -> None:
        """QIDEACT + QIACT (pdpdeact, repeated QIOPEN failures, context found inactive), with
        AT+QICSGP in between when asked (reload, reconnect) or when new settings wait."""
        kind = reason.split(":", 1)[0]
        self.cycles[kind] += 1
        n = self.sup.connection_count(self.context_id)
        log.warning(
            "cycling context %d: %s%s", self.context_id, reason,
            "" if n is None else f"; {n} connection{'' if n == 1 else 's'} on it reset",
        )
        self.sup.schedule.interrupted(trio.current_time())
        await self.deactivate(kind)
        if configure or self.wanted != self._configured:
            await self.configure()
        await self.activate()

    # -- serving ------------------------------------------------------------------------------------
    async def check(self) -> None:
        """The periodic AT+QIACT?: inactive -> cycle; a new address -> its sockets reset."""
        sup = self.sup
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


async def serve(sup: Supervisor) -> None:
    """serving (every context up): each keeper's cycle requests in turn, AT+QIACT? of every
    context periodically. Never returns."""
    t, requests = sup.timings, sup.cycle_requests
    while True:
        await ride_out_registration_loss(sup)
        sup.enter(State.SERVING, None)
        sup.schedule.serving(trio.current_time())
        waiting = next((k for k in sup.contexts if k.pending), None)
        if waiting is not None:  # a reload during bring-up, after its QICSGP: use them now
            await waiting.cycle(f"reload: {', '.join(waiting.pending)} changed", configure=True)
            continue
        request = requests.take()
        if request is not None:
            keeper, reason, configure = request
            await keeper.cycle(reason, configure=configure)
            continue
        with trio.move_on_after(t.pdp_check_interval) as timer:
            await until_registration_lost(sup, requests.wait)
        if sup.radio.registration_lost.is_set() or not timer.cancelled_caught:
            continue  # the network first (requests wait for it), or a request to take
        for keeper in sup.contexts:
            await keeper.check()
