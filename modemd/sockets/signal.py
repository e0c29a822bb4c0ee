"""Small trio helpers for URC-driven wake-ups (URC handlers set flags; tasks wait on them)."""

from __future__ import annotations

import trio


class Signal:
    """A re-armable Event: `set()` from a URC handler, `wait()` then `clear()` in the worker."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        if self._event.is_set():
            self._event = trio.Event()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


async def wait_any(*events: trio.Event | Signal) -> None:
    """Return as soon as one of the events is set."""
    for event in events:
        if event.is_set():
            await trio.lowlevel.checkpoint()
            return
    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(_wait_then_cancel, event, nursery.cancel_scope)


async def _wait_then_cancel(event: trio.Event | Signal, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
