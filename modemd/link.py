"""ModemLink: what the supervisor tells the socket layer, and what the socket layer reports back.

The supervisor owns the module's life (power, boot, SIM, registration, PDP). The socket layer owns
connect_ids. They meet here, so neither imports the other:

- supervisor -> sockets: `at` (the command helpers of the current module session), `serving(ctx)`
  and `wait_serving(ctx)`, and `lost(ctx)`: an Event set when the context (or the whole module) is gone,
  so every socket opened under it must be reset now.
- supervisor -> everyone: `radio`, the radio task's publication (signal, operator, registration
  per domain, losses): metrics, status and the alerts read it, nobody asks the module again.
- sockets -> supervisor: `set_background_lane(lane)`: the socket scheduler's background turns
  (at most one bookkeeping query out at a time, data first); the supervisor's radio polls take
  `background_turn()` so they never crowd out a data command.
- sockets -> supervisor: `report_open(ctx, ok)` (5 consecutive failures -> PDP cycle). A command
  deadline is not reported here: the AT channel reports a silent module to the supervisor itself
  (the one route for command timeouts), and a lost command (CommandLost) is its caller's business.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import trio

from .at.commands import QuectelAt
from .at.radio import Operator, Quality
from .at.urc import Registration
from .profiles import Profile

log = logging.getLogger("modemd.supervisor")


OPEN_FAILURES_TO_CYCLE = 5   # flowchart §1.1: 5 consecutive failed QIOPENs -> QIDEACT + QIACT
CYCLE_MIN_INTERVAL = 300.0   # s between two cycles asked for by failed opens (one per 5 min)


@dataclass
class ContextInfo:
    context_id: int
    up: bool = False
    addresses: tuple[str, ...] = ()
    up_event: trio.Event = field(default_factory=trio.Event)
    lost_event: trio.Event = field(default_factory=trio.Event)
    # consecutive failed opens: the remote of each ("" for a failure that implicates the context)
    failed_opens: list[str] = field(default_factory=list)
    last_open_cycle: float = -CYCLE_MIN_INTERVAL
    cycles_suppressed: int = 0

    @property
    def open_failures(self) -> int:
        return len(self.failed_opens)


@dataclass
class RadioStats:
    """The radio task's publication (supervisor/radio.py writes it, everyone else reads it).

    `registration` holds the last report per kind (CREG/CGREG/CEREG/C5GREG), from URCs and the
    periodic read; `registered` is None until a PS report arrived. `losses` counts registrations
    lost while serving; `sampled_at` is the trio time of the last signal sample (None: none yet)."""

    csq: int | None = None
    ber: int | None = None
    rssi_dbm: float | None = None
    quality: Quality | None = None
    operator: Operator | None = None
    registration: dict[str, Registration] = field(default_factory=dict)
    registered: bool | None = None
    losses: int = 0
    lost_since: float | None = None
    sampled_at: float | None = None
    polls: int = 0
    poll_failures: int = 0


BackgroundLane = Callable[[Hashable], AbstractAsyncContextManager[None]]


class ModemLink:
    def __init__(self) -> None:
        self.at: QuectelAt | None = None
        self.profile: Profile | None = None
        self.state = "starting"
        self.status_text = "starting"
        self.identity: dict[str, str] = {}
        self.module_generation = 0
        self._contexts: dict[int, ContextInfo] = {}
        self._cycle_in, self.cycle_requests = trio.open_memory_channel(16)
        self.radio = RadioStats()
        self._background_lane: BackgroundLane | None = None

    def context(self, context_id: int) -> ContextInfo:
        if context_id not in self._contexts:
            self._contexts[context_id] = ContextInfo(context_id)
        return self._contexts[context_id]

    # -- supervisor side ----------------------------------------------------------------------
    def set_state(self, state: str, status_text: str | None = None) -> None:
        self.state = state
        self.status_text = status_text or state

    def context_up(self, context_id: int, addresses: tuple[str, ...]) -> None:
        ctx = self.context(context_id)
        if ctx.up:
            ctx.addresses = addresses
            return
        ctx.up, ctx.addresses = True, addresses
        ctx.lost_event = trio.Event()
        ctx.failed_opens.clear()
        ctx.up_event.set()

    def context_down(self, context_id: int) -> None:
        """The context is gone: wake everyone holding a socket in it."""
        ctx = self.context(context_id)
        ctx.up, ctx.addresses = False, ()
        if ctx.up_event.is_set():  # keep an unset event: wait_serving() callers are parked on it
            ctx.up_event = trio.Event()
        ctx.lost_event.set()

    def module_reset(self) -> None:
        """The module rebooted (RDY / POWERED DOWN / power cycle): every socket is invalid."""
        self.module_generation += 1
        for context_id in list(self._contexts):
            self.context_down(context_id)

    @asynccontextmanager
    async def background_turn(self, key: Hashable = "radio") -> AsyncIterator[None]:
        """Hold a background turn of the socket scheduler (if one is wired) while a bookkeeping
        command runs: data commands keep priority, at most one background query is out."""
        if self._background_lane is None:
            yield
            return
        async with self._background_lane(key):
            yield

    # -- socket side --------------------------------------------------------------------------
    def set_background_lane(self, lane: BackgroundLane) -> None:
        """The socket scheduler's background turns (`lane(key)` is an async context manager)."""
        self._background_lane = lane

    def serving(self, context_id: int) -> bool:
        return self.at is not None and self.context(context_id).up

    async def wait_serving(self, context_id: int) -> None:
        while not self.serving(context_id):
            await self.context(context_id).up_event.wait()
            await trio.lowlevel.checkpoint()

    def lost(self, context_id: int) -> trio.Event:
        """The Event that fires when the sockets of this context must be reset."""
        return self.context(context_id).lost_event

    def report_open(self, context_id: int, ok: bool, remote: str = "") -> None:
        """A QIOPEN succeeded (ok) or failed. `remote`: the failure may be that remote's fault
        (host:port); "" when it implicates the context or the module. Five failures in a row ask
        for a PDP cycle when they implicate the context or reached more than one remote, at most
        once per CYCLE_MIN_INTERVAL."""
        ctx = self.context(context_id)
        if ok:
            ctx.failed_opens.clear()
            return
        ctx.failed_opens.append(remote)
        if len(ctx.failed_opens) < OPEN_FAILURES_TO_CYCLE:
            return
        remotes = set(ctx.failed_opens)
        ctx.failed_opens.clear()
        if "" not in remotes and len(remotes) < 2:
            log.info("context %d: %d failed opens in a row, all to %s: that remote's trouble, "
                     "not the context's (no PDP cycle)", context_id, OPEN_FAILURES_TO_CYCLE,
                     remotes.pop())
            return
        now = trio.current_time()
        if now - ctx.last_open_cycle < CYCLE_MIN_INTERVAL:
            ctx.cycles_suppressed += 1
            log.warning("context %d: %d failed opens in a row, but the last PDP cycle for failed "
                        "opens was %.0f s ago (at most one per %.0f s)", context_id,
                        OPEN_FAILURES_TO_CYCLE, now - ctx.last_open_cycle, CYCLE_MIN_INTERVAL)
            return
        ctx.last_open_cycle = now
        try:
            self._cycle_in.send_nowait(context_id)
        except trio.WouldBlock:
            pass
