"""The supervisor: owns the serial port and the module's life, forever, without threads.

Structure (all trio tasks under `run`):

    run ─┬─ link watcher (cycle requests -> PDP cycle), health loop
         └─ per open port: session ─┬─ channel task (AtChannel.run + URC watcher), replaced on
                                     │  every reboot / module reset so no stale command blocks it
                                     └─ life: bring-up -> serving, guarded by a cancel scope that
                                        any "trouble" (reboot rule, unsolicited RDY / POWERED DOWN,
                                        an echo while ATE0 is in effect, the channel's silence
                                        report, port lost) cancels; then resync / reset /
                                        back-off + ladder / reopen

Recovery is proportionate. A command lost on the line is the channel's business (CommandLost to its
caller; during bring-up the step is asked again within its flowchart budget). The one route for
command timeouts is the channel's silence report (its probe series went unanswered): the supervisor
then probes again (resync). A module that answers is alive: nothing is rebooted, sockets stay and
serving resumes (AT+QIACT? re-checks the context). Only a module that stays silent climbs the
ladder (supply cut, PWRKEY); a flowchart rule that says "reboot" goes through the ladder's QPOWD.

Metrics-friendly attributes: `state`, `state_since`, `schedule` (reboot count, next_reboot_time,
reasons, history), `ladder_steps`, `ladder_failures`, `last_ladder`, `last_recovery_seconds`,
`module_resets`, `health_checks`, `health_failures`, `cfun_cycles`, `pdp` (activations,
deactivations, cycles, failures in a row), `troubles` (why each phase ended, by kind), `sim`
(the SIM's `SimStatus`: state and attempts left).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import sys
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..at.channel import (
    PROBES,
    AtChannel,
    AtCommandError,
    AtTimeout,
    ChannelClosed,
    ChannelStats,
    CommandLost,
    Observer,
)
from ..at.commands import QuectelAt
from ..at.urc import ModuleReady, PdpDeact, PoweredDown, Registration, SimState
from ..instance import state_dir as default_state_dir
from ..link import ModemLink
from ..profiles import Profile, UnknownModel, UnsupportedConfig, detect, get_profile
from ..serial import SerialError, SerialMissing, SerialPort
from . import bringup
from .backoff import RebootSchedule
from .health import health_loop
from .ladder import ALIVE, FAILED, PORT_LOST, RESET, Ladder
from .pdp import CycleRequests, PdpKeeper, serve
from .power import make_power_backend
from .radio import RadioWatch
from .sim import SimKeeper, SimStatus
from .states import (
    BOOTING_STATES,
    SIM_IN_USE_STATES,
    TALKING_STATES,
    RebootNeeded,
    State,
    Timings,
    Trouble,
    status_text,
)

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger("modemd.supervisor")

# Commands lost this often within LOST_WINDOW seconds (each answered probe: the module is alive)
# while the supervisor itself talks: something is wrong that a retry does not fix; reboot.
LOST_LIMIT = 5
LOST_WINDOW = 60.0

StaleReset = Callable[[QuectelAt], Awaitable[Any]]
ProfileCheck = Callable[[Profile, str], None]  # raises UnsupportedConfig


def _find(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of `types` in `exc` or (nested) exception groups."""
    if isinstance(exc, types):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _find(inner, types)
            if found is not None:
                return found
    return None


def _only_cancelled_besides(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled_besides(e, types) for e in exc.exceptions)
    return isinstance(exc, (*types, trio.Cancelled))


class _Watch(Observer):
    """Chains the caller's observer; the channel's silence report and an echo while ATE0 is in
    effect reach the supervisor here (the one route from the channel)."""

    def __init__(self, sup: Supervisor, inner: Observer | None) -> None:
        self.sup = sup
        self.inner = inner or Observer()

    def command_done(self, name: str, seconds: float, final: str) -> None:
        self.inner.command_done(name, seconds, final)

    def command_timeout(self, name: str) -> None:
        self.inner.command_timeout(name)

    def pushed(self, connect_id: int, size: int) -> None:
        self.inner.pushed(connect_id, size)

    def command_lost(self, name: str) -> None:
        self.inner.command_lost(name)

    def module_silent(self, name: str, seconds: float) -> None:
        self.inner.module_silent(name, seconds)
        self.sup._module_silent(name, seconds)

    def echo_back(self, name: str) -> None:
        self.inner.echo_back(name)
        self.sup._echo_back(name)

    def urc(self, urc) -> None:
        self.inner.urc(urc)

    def unknown_line(self, text: str) -> None:
        self.inner.unknown_line(text)

    def urc_dropped(self, urc) -> None:
        self.inner.urc_dropped(urc)


class Supervisor:
    """Brings the module up, keeps the PDP context alive and recovers it by the manuals' rules.

    cfg          a `modemd.config.Config` (uses modem, pdp, power, supervisor, listens, proxy)
    link         the ModemLink shared with the socket layer
    open_port    zero-argument callable returning an open port (default: SerialPort.open with
                 modem.port / baudrate / rtscts / lock_dir); raises SerialError while it is missing
    power        a power backend (default: make_power_backend(cfg.power))
    reset_stale  `async (QuectelAt) -> None`, closes sockets left over from before (default:
                 AT+QISTATE + AT+QICLOSE each)
    timings      flowchart numbers and budgets (tests shorten nothing: they use MockClock)
    rng          jitter source of the reboot back-off (tests: `lambda: 0.0`)
    observer     AT channel observer to chain (metrics)
    connections  callable giving the number of open connections, for the status line; with
                 several contexts also called with a context_id (that context's connections)
    check_profile  `(profile, what) -> None`, raises UnsupportedConfig when the configuration asks
                 for something the identified family cannot do (fatal: the daemon stops)
    state_dir    where the SIM's rejected PINs are kept across restarts (default: instance.state_dir)
    config_path  the configuration file, named in the SIM stop states' messages
    """

    def __init__(
        self,
        cfg: Any,
        link: ModemLink,
        *,
        open_port: Callable[[], Any] | None = None,
        power: Any = None,
        reset_stale: StaleReset | None = None,
        timings: Timings | None = None,
        rng: Callable[[], float] = random.random,
        observer: Observer | None = None,
        connections: Callable[[], int] | None = None,
        check_profile: ProfileCheck | None = None,
        state_dir: str | None = None,
        config_path: str = "",
    ) -> None:
        self.cfg = cfg
        self.link = link
        self.timings = timings or Timings()
        self._open_port = open_port or self._open_configured_port
        self._own_power = power is None
        self.power = power if power is not None else make_power_backend(cfg.power)
        self._reset_stale = reset_stale
        self._observer = observer
        self._connections = connections
        self._check_profile = check_profile
        sup_cfg = cfg.supervisor
        self.schedule = RebootSchedule(
            healthy_reset=sup_cfg.healthy_reset_seconds, jitter=sup_cfg.reboot_jitter, rng=rng
        )
        model = cfg.modem.model
        self.profile: Profile = get_profile("bg96" if model == "auto" else model)
        self.cycle_requests = CycleRequests()
        keys = ["pdp"] if len(cfg.pdp) == 1 else [f"pdp[{i}]" for i in range(len(cfg.pdp))]
        #: one keeper per configured context, in file order; `pdp` is the first (the default)
        self.contexts: tuple[PdpKeeper, ...] = tuple(
            PdpKeeper(self, p, self.cycle_requests, key) for p, key in zip(cfg.pdp, keys, strict=True)
        )
        self.pdp = self.contexts[0]
        self.sim_keeper = SimKeeper(
            self, default_state_dir() if state_dir is None else state_dir, config_path
        )
        self.radio = RadioWatch(self)
        # state
        self.state = State.STARTING
        self.state_detail = ""
        self.state_since = -math.inf
        self._deadline = math.inf
        self.channel: AtChannel | None = None
        self.at: QuectelAt | None = None  # type: ignore[assignment]
        self.port_lost: BaseException | None = None
        self._port: Any = None
        self._nursery: trio.Nursery | None = None
        self._channel_scope: trio.CancelScope | None = None
        self._channel_done: trio.Event | None = None
        self._guard: trio.CancelScope | None = None
        self._trouble: Trouble | None = None
        self._force_reboot = False
        self._ever_opened = False
        self._backoff_scope: trio.CancelScope | None = None
        # module boot events (RDY / POWERED DOWN)
        self.boots = 0
        self.powered_downs = 0
        self.module_up = False
        self.boot_event = trio.Event()
        self.powered_down_event = trio.Event()
        self._last_rdy = -math.inf
        # metrics
        self.transitions: Counter[str] = Counter()
        self.history: deque[tuple[float, str, str]] = deque(maxlen=256)  # (time, state, detail)
        self._state_event = trio.Event()
        self.troubles: Counter[str] = Counter()
        self.ladder_steps: Counter[str] = Counter()
        self.reboots_by_step_cause: Counter[tuple[str, str]] = Counter()  # (last good step, cause)
        self.ladder_failures: Counter[str] = Counter()
        self.last_ladder: list = []
        self.last_recovery_seconds: float | None = None
        self.module_resets = 0
        self.sim_losses = 0              # a +CPIN other than READY while the SIM was in use
        self.resyncs = 0                 # silences that ended with an answered probe (no reboot)
        self.keepalive_noted = False     # "this family has no TCP keepalive" said once
        self.silent_reboots = 0          # module resets seen as an echo while ATE0 was in effect
        self.commands_lost_talking = 0   # CommandLost in the supervisor's own steps
        self._lost_times: deque[float] = deque(maxlen=LOST_LIMIT)
        self._echo_seen = False
        self.health_checks = 0
        self.health_failures = 0
        self.cfun_cycles = 0
        self.port_losses = 0

    # -- public -------------------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own the port and the module until cancelled."""
        if self.power.name == "none":
            log.info(
                "power.backend = none: a hung module can only be reset by software "
                "(AT+CFUN=1,1 / AT+QPOWD); wire power.backend for a real power cycle"
            )
        else:
            log.info(
                "power backend %s: supply control %s, PWRKEY %s", self.power.name,
                "yes" if self.power.has_supply else "no", "yes" if self.power.has_pwrkey else "no",
            )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_cycles)
                nursery.start_soon(health_loop, self)
                nursery.start_soon(self.radio.run)
                task_status.started()
                while True:
                    port = await self._wait_for_port()
                    try:
                        await self._session(port)
                    finally:
                        self._close_port(port)
        except BaseExceptionGroup as group:
            fatal = _find(group, (UnknownModel, UnsupportedConfig))
            if fatal is not None:
                raise fatal from None
            raise
        finally:
            self.link.at = None
            self.link.module_reset()
            self.state = State.STOPPED
            self.link.set_state(State.STOPPED.value, "stopped")
            if self._own_power:
                with trio.CancelScope(shield=True):
                    await self.power.aclose()

    def healthy(self) -> bool:
        """For the systemd watchdog: the AT channel answers, or the current state is in budget.

        Serving: an answer within health_interval + health_timeout (+ grace). Any other state has
        a budget (SIM 20 s, QIACT 150 s, back-off until the due reboot ...): overrunning it by
        `watchdog_grace` means the supervisor is wedged.
        """
        now = trio.current_time()
        if self.state is State.SERVING:
            if self.channel is None:
                return False
            modem = self.cfg.modem
            limit = modem.health_interval + modem.health_timeout + self.timings.watchdog_grace
            return self.channel.seconds_since_answer() <= limit
        return now <= self._deadline

    def status_text(self) -> str:
        detail = self.state_detail
        if self.state is State.SERVING:
            addresses = [a for k in self.contexts for a in k.addresses]
            parts = [", ".join(addresses) or "no address"]
            if self._connections is not None:
                n = self._connections()
                parts.append(f"{n} connection{'' if n == 1 else 's'}")
            detail = ", ".join(parts)
        elif self.state is State.BACKOFF and self.schedule.next_reboot_time is not None:
            left = self.schedule.seconds_until_reboot(trio.current_time()) or 0.0
            detail = f"reboot {self.schedule.count + 1} in {_duration(left)}: {self.schedule.pending_reason}"
        elif self.state is State.PORT_MISSING:
            detail = self.cfg.modem.port or detail
        return status_text(self.state, detail)

    async def wait_for_state(self, *states: State) -> float:
        """Wait until the supervisor enters one of `states` (now, if it is in one); its time."""
        while self.state not in states:
            await self._state_event.wait()
        return trio.current_time()

    @property
    def channel_stats(self) -> ChannelStats | None:
        """The current AT channel's counters (None before the first channel)."""
        return self.channel.stats() if self.channel is not None else None

    @property
    def next_reboot_unix(self) -> float:
        """Wall-clock time of the next scheduled reboot, 0 when none is (for the metric)."""
        due = self.schedule.next_reboot_time
        if due is None:
            return 0.0
        return time.time() + max(0.0, due - trio.current_time())

    def refresh_status(self) -> None:
        self.link.status_text = self.status_text()

    def keeper(self, context_id: int) -> PdpKeeper | None:
        """The keeper of a configured context, None for any other context_id."""
        return next((k for k in self.contexts if k.context_id == context_id), None)

    def apply_pdp(self, settings: Any) -> None:
        """A reload's new [pdp] entries (a PdpConfig or a tuple of them, each for a configured
        context_id): each is in effect once its context is re-cycled with it (at once while
        serving: QIDEACT -> QICSGP -> QIACT; else at the next configure step)."""
        for one in settings if isinstance(settings, tuple) else (settings,):
            keeper = self.keeper(one.context_id)
            if keeper is None:
                raise ValueError(f"context {one.context_id} is not configured: restart modemd")
            keeper.apply(one)

    def reconnect(self, reason: str) -> None:
        """modemctl reconnect: QIDEACT -> QICSGP (the settings in effect) -> QIACT, for every
        context."""
        for keeper in self.contexts:
            keeper.request_cycle(reason, configure=True)

    def connection_count(self, context_id: int | None = None) -> int | None:
        """Open connections (for log lines about resets), on `context_id` when there are several
        contexts, None when nobody told us."""
        if self._connections is None:
            return None
        if context_id is None or len(self.contexts) < 2:
            return self._connections()
        return self._connections(context_id)

    @property
    def sim(self) -> SimStatus:
        """The SIM's state and attempts left, as last seen (status and metrics read this)."""
        return self.sim_keeper.status

    def apply_sim(self, sim: Any) -> bool:
        """A reload's new [sim]: kept as the supervisor's own, then tried (sim_retry)."""
        self.cfg = dataclasses.replace(self.cfg, sim=sim)
        return self.sim_retry()

    def sim_retry(self) -> bool:
        """Leave a SIM stop state and run the SIM step again with the current `cfg.sim` (reload
        calls this when [sim] changed). False when the supervisor is in no SIM stop state."""
        return self.sim_keeper.retry()

    @property
    def next_reboot_time(self) -> float | None:
        return self.schedule.next_reboot_time

    @property
    def reboot_count(self) -> int:
        return self.schedule.count

    @property
    def reboot_reasons(self) -> Counter[str]:
        """Reboots since start by reason kind ("sim_not_ready", "qiact_timeout", ...)."""
        return self.schedule.reasons

    # -- used by the step modules ---------------------------------------------------------------------
    def enter(
        self, state: State, budget: float | None, detail: str = "", *, keep_deadline: bool = False
    ) -> None:
        """Switch state (logged), set its budget for healthy(), publish it on the link."""
        now = trio.current_time()
        if state is not self.state:
            log.info(
                "state %s -> %s%s", self.state, state, f" ({detail})" if detail else "",
                extra={"MODEM_STATE": state.value},
            )
            if self.state is State.SERVING:
                self.schedule.interrupted(now)
            self.state = state
            self.state_since = now
            self.transitions[state.value] += 1
            self.history.append((now, state.value, detail))
            self._state_event.set()
            self._state_event = trio.Event()
        self.state_detail = detail
        if not keep_deadline:
            self._deadline = now + (math.inf if budget is None else budget) + self.timings.watchdog_grace
        self.link.set_state(state.value, self.status_text())

    def fire_reboot(self, reason: str, *, force: bool = False) -> None:
        """Reboot through the ladder; `force` (modemctl reboot --force) skips the back-off wait."""
        if force:
            self._force_reboot = True
            if self._backoff_scope is not None:
                self._backoff_scope.cancel()
        self._fire(Trouble("reboot", reason))

    async def identify(self) -> None:
        """AT+CGMM (ATI as fallback): link.identity, and the profile when modem.model = auto."""
        at = self.at
        try:
            identity = await at.identify()
        except AtCommandError:
            identity = {"model": await at.ati(), "firmware": "", "imei": ""}
        self.link.identity = identity
        model = self.cfg.modem.model
        text = identity.get("model", "")
        if model == "auto":
            try:
                profile = detect(text)
            except UnknownModel:
                profile = detect(await at.ati())
        else:
            profile = get_profile(model)
            try:
                seen = detect(text)
            except UnknownModel:
                seen = None
            if seen is not None and seen is not profile:
                log.warning(
                    "modem.model = %s, but the module identifies as %r (profile %s)",
                    model, text, seen.name,
                )
        if model == "auto" and self._check_profile is not None:
            self._check_profile(
                profile, f'modem.model = "auto": the module identifies as {text!r}, profile '
                f"{profile.name}",
            )
        if profile is not self.profile or self.at is None or self.at.profile is not profile:
            log.info("module %r: using profile %s (%s)", text, profile.name, profile.title)
            self.profile = profile
            self._bind(self.channel)

    async def reset_stale(self, at: QuectelAt) -> None:
        if self._reset_stale is not None:
            await self._reset_stale(at)
        else:
            for keeper in self.contexts:
                await bringup.close_stale_sockets(at, keeper.context_id)

    async def pwrkey_pulse(self) -> None:
        await self.power.pwrkey_pulse()

    # -- the port -------------------------------------------------------------------------------------
    def _open_configured_port(self) -> SerialPort:
        modem = self.cfg.modem
        return SerialPort.open(
            modem.port, modem.baudrate, rtscts=modem.rtscts, lock_dir=modem.lock_dir or None
        )

    async def _wait_for_port(self) -> Any:
        """Open the port; while it is missing: port_missing, poll, and power-cycle if that helps."""
        t = self.timings
        hardware = self.power.has_supply or self.power.has_pwrkey
        missing_since: float | None = None
        last_error = ""
        poll = t.port_poll
        while True:
            try:
                port = self._open_port()
            except SerialError as exc:
                if not self._ever_opened and not isinstance(exc, SerialMissing):
                    raise  # busy / permission denied at start: the user must fix it, say so and stop
                now = trio.current_time()
                if str(exc) != last_error:
                    log.warning("%s; waiting for it", exc)
                    last_error = str(exc)
                if missing_since is None:
                    missing_since = now
                    self.port_lost = self.port_lost or exc
                    self.link.at = None
                    budget = t.port_return_timeout if hardware else None
                    self.enter(State.PORT_MISSING, budget, str(exc))
                elif hardware and now - missing_since >= t.port_return_timeout:
                    await self._recover(
                        f"port_missing: {self.cfg.modem.port or 'the serial port'} gone for "
                        f"{t.port_return_timeout:g} s"
                    )
                    missing_since = None
                    poll = t.port_poll
                    continue
                await trio.sleep(poll)
                poll = min(poll * 1.5, t.port_poll_max)  # USB re-enumeration: quick first looks
                continue
            if missing_since is not None:
                log.info("serial port back after %.1f s", trio.current_time() - missing_since)
            self.port_lost = None
            self._ever_opened = True
            return port

    def _close_port(self, port: Any) -> None:
        self.link.at = None
        try:
            port.close()
        except Exception as exc:  # a vanished device may fail to close; it is gone anyway
            log.debug("closing the port: %r", exc)

    def _lose_port(self, exc: BaseException) -> None:
        if self.port_lost is None:
            self.port_losses += 1
            log.warning("serial port lost: %s", exc)
        self.port_lost = exc
        self.link.at = None
        for event in (self.boot_event, self.powered_down_event):  # wake the ladder's waits
            event.set()
        self.boot_event, self.powered_down_event = trio.Event(), trio.Event()
        self._fire(Trouble("port_lost", str(exc)))

    # -- the session (one open port) -----------------------------------------------------------------
    async def _session(self, port: Any) -> None:
        self._port = port
        self.port_lost = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self._new_channel()
                try:
                    await self._life()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self._channel_scope = None
            self._channel_done = None
            self.link.module_reset()

    def _bind(self, channel: AtChannel | None) -> None:
        if channel is None:
            return
        self.at = QuectelAt(channel, self.profile)
        self.link.profile = self.profile
        if self.port_lost is None:
            self.link.at = self.at

    async def _new_channel(self) -> None:
        """Stop the current AtChannel (every waiter gets ChannelClosed) and start a fresh one."""
        if self._channel_scope is not None:
            self._channel_scope.cancel()
            assert self._channel_done is not None
            await self._channel_done.wait()
            self._channel_scope = self._channel_done = None
        if self.port_lost is not None:
            return
        channel = AtChannel(self._port, observer=_Watch(self, self._observer))
        urcs = channel.subscribe()
        self.channel = channel
        self.radio.reset()
        self._bind(channel)
        assert self._nursery is not None
        self._channel_scope, self._channel_done = await self._nursery.start(
            self._channel_task, channel, urcs
        )

    async def _channel_task(self, channel: AtChannel, urcs, *, task_status) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(channel.run)
                        nursery.start_soon(self._watch_urcs, urcs)
                        task_status.started((scope, done))
                except BaseException as exc:
                    port_errors = (SerialError, OSError, trio.BrokenResourceError, trio.ClosedResourceError)
                    lost = _find(exc, port_errors)
                    if lost is None or not _only_cancelled_besides(exc, port_errors):
                        raise
                    self._lose_port(lost)
        finally:
            done.set()

    # -- troubles ---------------------------------------------------------------------------------------
    def _fire(self, trouble: Trouble) -> None:
        """End the current phase (bring-up or serving) because of `trouble`; first one wins."""
        if self._guard is None:
            log.debug("not acting on %s (%s) while %s", trouble.kind, trouble.reason, self.state)
            return
        if self._trouble is None:
            self._trouble = trouble
        self._guard.cancel()

    def _module_silent(self, name: str, seconds: float) -> None:
        """The channel's report: `name` and its probe series went unanswered."""
        if self.state in TALKING_STATES:
            self._fire(Trouble(
                "silent", f"no_answer: {name} and {PROBES} AT probes unanswered ({seconds:.1f} s)"
            ))
        else:
            log.info("module silent while %s (%s): the current step decides", self.state, name)

    def _echo_back(self, name: str) -> None:
        """An echo of our command while ATE0 is in effect: the module restarted without the host
        seeing RDY (line-shapes A3). Every socket is gone: re-initialise, no ladder."""
        if self.state not in BOOTING_STATES:
            self.silent_reboots += 1
            self._echo_seen = True  # also heard by a resync running outside the guard
            self._fire(Trouble("reset", f"module_reset: {name} echoed although ATE0 is in "
                                        "effect (the module restarted unseen)"))

    async def _guarded(self, phase: Callable[[], Awaitable[None]]) -> Trouble:
        self._trouble = None
        with trio.CancelScope() as scope:
            self._guard = scope
            try:
                await phase()
                self._trouble = Trouble("reboot", "internal: phase ended")  # pragma: no cover
            except RebootNeeded as exc:
                self._trouble = self._trouble or Trouble("reboot", exc.reason)
            except CommandLost as exc:
                self._trouble = self._trouble or Trouble("lost", str(exc))
            except AtTimeout as exc:
                name = exc.command.name
                self._trouble = self._trouble or Trouble(
                    "reboot",
                    f"{name[3:].lower() or 'at'}_timeout: no answer to {name} in {exc.seconds:g} s",
                )
            except ChannelClosed as exc:
                if self._trouble is None:
                    kind = "port_lost" if self.port_lost is not None else "reset"
                    self._trouble = Trouble(kind, f"AT channel closed: {exc}")
            finally:
                self._guard = None
        trouble = self._trouble or Trouble("reboot", "internal: no reason")
        self.troubles[trouble.kind] += 1
        return trouble

    # -- the life of the module on one port -----------------------------------------------------------------
    async def _life(self) -> None:
        phase = self._bring_up_and_serve
        while self.port_lost is None:
            trouble = await self._guarded(phase)
            phase = self._bring_up_and_serve
            if self.port_lost is not None or trouble.kind == "port_lost":
                return
            if trouble.kind == "lost" and not self._too_many_lost():
                # a command of ours was lost on the line; the module answered the probe
                log.warning("%s: asking again (the module is alive)", trouble.reason)
                phase = self._resume
                continue
            if trouble.kind == "silent":
                outcome = await self._resync(trouble.reason)
                if outcome == ALIVE:
                    phase = self._resume
                    continue
                if outcome == PORT_LOST:
                    return
                if outcome == RESET:
                    trouble = Trouble("reset", "module_reset: the module restarted while silent "
                                               "(RDY or an echo during the resync)")
            self.link.module_reset()
            if trouble.kind == "sim":  # pulled or failed: no reboot helps; the SIM step decides
                self.sim_losses += 1
                log.warning("%s: every socket is reset; checking the SIM again (no reboot)",
                            trouble.reason)
                continue
            if trouble.kind == "reset":
                self.module_resets += 1
                log.warning("%s: every socket is gone; initialising again", trouble.reason)
                await self._new_channel()
                continue
            if trouble.kind == "lost":
                trouble = Trouble("reboot", f"lost_commands: {LOST_LIMIT} commands lost within "
                                            f"{LOST_WINDOW:g} s ({trouble.reason})")
            outcome = await self._recover(trouble.reason, resynced=trouble.kind == "silent")
            while outcome == FAILED:
                outcome = await self._recover("reboot_failed: the module did not come back")
            if outcome == PORT_LOST:
                return

    def _too_many_lost(self) -> bool:
        now = trio.current_time()
        self.commands_lost_talking += 1
        self._lost_times.append(now)
        return len(self._lost_times) == LOST_LIMIT and now - self._lost_times[0] <= LOST_WINDOW

    async def _resync(self, reason: str) -> str:
        """The channel found the module silent: probe again, before any reboot or back-off.
        ALIVE (it answers: nothing is rebooted), RESET (it rebooted by itself), PORT_LOST or
        FAILED (still silent: the ladder goes on from there)."""
        log.warning("%s: probing the module before anything else", reason)
        ladder = Ladder(self)
        self._echo_seen = False
        outcome = await ladder.resync_outcome()
        self.last_ladder = ladder.steps
        if outcome == ALIVE and self._echo_seen:
            return RESET  # it answered with the echo back on: it restarted while silent
        if outcome == ALIVE:
            self.resyncs += 1
            log.warning("the module answers again: no reboot, serving resumes")
        return outcome

    async def _resume(self) -> None:
        """After a lost command or a silence the module answered: go on without a reset. While
        the context was up, its sockets stay: AT+QIACT? re-checks it (activating it again if the
        module lost it), then serving; before that, bring-up starts over."""
        if not any(self.link.serving(k.context_id) for k in self.contexts):
            await self._bring_up_and_serve()
            return
        for keeper in self.contexts:
            await keeper.activate()
        await serve(self)

    async def _bring_up_and_serve(self) -> None:
        t = self.timings
        await bringup.power_on(self)
        if self.port_lost is not None:
            return
        await bringup.init(self)
        await bringup.wait_sim(self)
        if self.profile.cs_registration:
            await bringup.wait_cs(self)
        registered = await bringup.wait_ps(self, t.ps_timeout)
        for keeper in self.contexts:
            await keeper.configure(look_first=True)
        if not registered:
            # S5 §1.1: "configure the PDP context then switch the functionality level with AT+CFUN"
            await bringup.cfun_cycle(self)
            await bringup.wait_sim(self)
            await bringup.wait_ps(self, t.ps_timeout)
        for keeper in self.contexts:  # serving means every context is up
            await keeper.activate()
        await serve(self)

    async def _recover(self, reason: str, *, resynced: bool = False) -> str:
        """Back-off, then the reboot ladder (without its resync step when `resynced`: the module
        was just probed and stayed silent). Returns READY / PORT_LOST / FAILED."""
        started = trio.current_time()
        self.link.module_reset()
        due = self.schedule.request(started, reason)
        log.warning("reboot needed: %s", reason)
        if self._force_reboot:
            self._force_reboot = False
            due = started
        if due > started:
            self.enter(State.BACKOFF, due - started)
            log.warning(
                "reboot %d of a run: waiting %s first (manual note 3 back-off)",
                self.schedule.count + 1, _duration(due - started),
            )
            with trio.CancelScope() as self._backoff_scope:
                await trio.sleep_until(due)
            self._backoff_scope = None
        record = self.schedule.rebooted(trio.current_time())
        self.enter(State.REBOOTING, 60.0, f"reboot {record.number}")
        if self.port_lost is None and self._nursery is not None:
            await self._new_channel()
        ladder = Ladder(self)
        if resynced:
            ladder.steps = list(self.last_ladder)  # the resync that found it silent
        outcome = await ladder.run(resynced=resynced)
        self.last_ladder = ladder.steps
        self.last_recovery_seconds = trio.current_time() - started
        effective = next((r.step for r in reversed(ladder.steps) if r.ok), "none")
        self.reboots_by_step_cause[(effective, _cause(reason))] += 1
        log.log(
            logging.WARNING if outcome == FAILED else logging.INFO,
            "reboot %d (%s): %s after %.1f s", record.number, reason, outcome,
            self.last_recovery_seconds,
        )
        return outcome

    # -- watchers -----------------------------------------------------------------------------------------
    async def _watch_urcs(self, urcs) -> None:
        async for urc in urcs:
            if isinstance(urc, ModuleReady):
                now = trio.current_time()
                if urc.text != "RDY" and now - self._last_rdy < self.timings.app_rdy_window:
                    continue  # "APP RDY" of the same boot
                self._last_rdy = now
                self.boots += 1
                self.module_up = True
                self.boot_event.set()
                self.boot_event = trio.Event()
                if self.state not in BOOTING_STATES:
                    self._fire(Trouble("reset", f"module_reset: unsolicited {urc.text}"))
            elif isinstance(urc, PoweredDown):
                self.powered_downs += 1
                self.module_up = False
                self.powered_down_event.set()
                self.powered_down_event = trio.Event()
                if self.state not in BOOTING_STATES:
                    self._fire(Trouble("reset", f"module_reset: unsolicited {urc.text}"))
            elif isinstance(urc, PdpDeact):
                keeper = self.keeper(urc.context_id)
                if keeper is not None:  # that context only: the others keep their sockets
                    log.warning('+QIURC: "pdpdeact",%d: the network dropped the context', urc.context_id)
                    self.link.context_down(urc.context_id)
                    keeper.request_cycle('pdpdeact: +QIURC: "pdpdeact"')
            elif isinstance(urc, Registration):
                self.radio.on_registration(urc)
            elif (isinstance(urc, SimState) and urc.state != "READY"
                  and self.state in SIM_IN_USE_STATES):
                self._fire(Trouble("sim", f"sim_lost: +CPIN: {urc.state} while {self.state}"))

    async def _watch_cycles(self) -> None:
        async for context_id in self.link.cycle_requests:
            keeper = self.keeper(context_id)
            if keeper is not None and self.link.serving(context_id):
                keeper.request_cycle("open_failures: 5 consecutive failed AT+QIOPEN")
            else:
                log.info("PDP cycle request for context %s while %s (ignored)", context_id, self.state)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["Supervisor"]


def _cause(reason: str) -> str:
    """The kind of a reboot reason ("qiact_timeout: ..." -> "qiact_timeout"), for metric labels."""
    return reason.split(":", 1)[0].strip().replace(" ", "_")[:40] or "unknown"
