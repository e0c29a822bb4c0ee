"""ModemLink: what the supervisor tells the socket layer, and what the socket layer reports back.

The supervisor owns the module's life (power, boot, SIM, registration, PDP). The socket layer owns
connect_ids. They meet here, so neither imports the other:

- supervisor -> sockets: `at` (the command helpers of the current module session), `serving(ctx)`
  and `wait_serving(ctx)`, and `lost(ctx)`: an Event set when the context (or the whole module) is gone,
  so every socket opened under it must be reset now.
- sockets -> supervisor: `report_open(ctx, ok)` (5 consecutive failures -> PDP cycle). A command
  deadline is not reported here: the AT channel reports a silent module to the supervisor itself
  (the one route for command timeouts), and a lost command (CommandLost) is its caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from .at.commands import QuectelAt
from .profiles import Profile


@dataclass
class ContextInfo:
    context_id: int
    up: bool = False
    addresses: tuple[str, ...] = ()
    up_event: trio.Event = field(default_factory=trio.Event)
    lost_event: trio.Event = field(default_factory=trio.Event)
    open_failures: int = 0


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
        ctx.open_failures = 0
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

    # -- socket side --------------------------------------------------------------------------
    def serving(self, context_id: int) -> bool:
        return self.at is not None and self.context(context_id).up

    async def wait_serving(self, context_id: int) -> None:
        while not self.serving(context_id):
            await self.context(context_id).up_event.wait()
            await trio.lowlevel.checkpoint()

    def lost(self, context_id: int) -> trio.Event:
        """The Event that fires when the sockets of this context must be reset."""
        return self.context(context_id).lost_event

    def report_open(self, context_id: int, ok: bool) -> None:
        ctx = self.context(context_id)
        if ok:
            ctx.open_failures = 0
            return
        ctx.open_failures += 1
        if ctx.open_failures >= 5:  # flowchart: 5 consecutive failed opens -> QIDEACT + QIACT
            ctx.open_failures = 0
            try:
                self._cycle_in.send_nowait(context_id)
            except trio.WouldBlock:
                pass
