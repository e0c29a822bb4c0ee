"""connect_id allocation: who owns which of the module's socket slots, and who waits for one.

The module has a fixed number of connect_ids (12, 6 on BC25) shared by client sockets, module-side
listeners and the incoming connections the module assigns itself. An ID is free again only after
AT+QICLOSE answered (manual: "closed" leaves the ID occupied). Client IDs are taken from the top so
they rarely collide with the low IDs the module picks for incoming connections (seeds §7 trap 21).
When every ID is taken, callers wait in a bounded FIFO queue with a deadline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import trio

from .errors import QUEUE_FULL, QUEUE_TIMEOUT, SocketError

FREE = "free"
USED = "used"              # owned by a socket object (opening, open, closing by its owner)
QUARANTINED = "quarantined"  # QICLOSE did not answer: state unknown until reset_stale() closes it
CLEANING = "cleaning"      # reset_stale() is closing it


@dataclass(slots=True)
class Slot:
    connect_id: int
    state: str = FREE
    owner: object | None = None


class _Waiter:
    __slots__ = ("owner", "event", "connect_id")

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.event = trio.Event()
        self.connect_id: int | None = None


class ConnectIdPool:
    """Slots by connect_id; hands a released ID straight to the oldest waiter."""

    def __init__(self, connect_ids: range, queue_limit: int) -> None:
        self.connect_ids = connect_ids
        self.queue_limit = queue_limit
        self._slots = {cid: Slot(cid) for cid in connect_ids}
        self._waiters: deque[_Waiter] = deque()
        self.queued_total = 0
        self.refused_full = 0
        self.refused_timeout = 0

    # -- queries ------------------------------------------------------------------------------
    def slot(self, connect_id: int) -> Slot:
        return self._slots[connect_id]

    def owner(self, connect_id: int) -> object | None:
        slot = self._slots.get(connect_id)
        return slot.owner if slot is not None else None

    @property
    def in_use(self) -> int:
        return sum(1 for s in self._slots.values() if s.state != FREE)

    @property
    def available(self) -> int:
        return sum(1 for s in self._slots.values() if s.state == FREE)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def ids_in(self, state: str) -> list[int]:
        return [s.connect_id for s in self._slots.values() if s.state == state]

    # -- allocation ---------------------------------------------------------------------------
    def try_acquire(self, owner: object) -> int | None:
        """The highest free ID, now owned by `owner`; None when all are taken."""
        if self._waiters:
            return None  # FIFO: queued callers go first
        for cid in reversed(self.connect_ids):
            slot = self._slots[cid]
            if slot.state == FREE:
                slot.state, slot.owner = USED, owner
                return cid
        return None

    async def acquire(self, owner: object, timeout: float) -> int:
        """An ID for `owner`, waiting up to `timeout` s in the bounded queue."""
        cid = self.try_acquire(owner)
        if cid is not None:
            await trio.lowlevel.checkpoint()
            return cid
        if len(self._waiters) >= self.queue_limit:
            self.refused_full += 1
            raise SocketError(QUEUE_FULL, f"all connect_ids busy and {self.queue_limit} queued")
        waiter = _Waiter(owner)
        self._waiters.append(waiter)
        self.queued_total += 1
        try:
            with trio.move_on_after(timeout):
                await waiter.event.wait()
        except BaseException:
            self._abandon(waiter)
            raise
        if waiter.connect_id is None:
            self._abandon(waiter)
            self.refused_timeout += 1
            raise SocketError(QUEUE_TIMEOUT, f"no connect_id became free within {timeout:g} s")
        return waiter.connect_id

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.connect_id is not None:
            self.release(waiter.connect_id, waiter.owner)  # granted as we gave up: pass it on
        elif waiter in self._waiters:
            self._waiters.remove(waiter)

    def release(self, connect_id: int, owner: object | None = None) -> bool:
        """Free an ID after QICLOSE answered; only its current owner (or anyone, if None) may."""
        slot = self._slots.get(connect_id)
        if slot is None or (owner is not None and slot.owner is not owner):
            return False
        slot.state, slot.owner = FREE, None
        self._hand_over(slot)
        return True

    def _hand_over(self, slot: Slot) -> None:
        if slot.state != FREE or not self._waiters:
            return
        waiter = self._waiters.popleft()
        slot.state, slot.owner = USED, waiter.owner
        waiter.connect_id = slot.connect_id
        waiter.event.set()

    def claim(self, connect_id: int, owner: object) -> object | None:
        """The module assigned this ID (incoming connection): it is `owner`'s now, whatever we thought.

        Returns the previous owner (an opener whose QIOPEN will fail with socket_id_used, or a socket
        the module evidently forgot) so the caller can tell it.
        """
        slot = self._slots.get(connect_id)
        if slot is None:
            return None
        previous = slot.owner
        slot.state, slot.owner = USED, owner
        return previous

    def quarantine(self, connect_id: int, owner: object | None = None) -> None:
        """QICLOSE did not answer: keep the ID out of use until reset_stale() closes it."""
        slot = self._slots.get(connect_id)
        if slot is not None and (owner is None or slot.owner is owner):
            slot.state, slot.owner = QUARANTINED, None

    def begin_cleaning(self, connect_id: int) -> bool:
        """Take a free or quarantined ID for reset_stale(); False if someone owns it."""
        slot = self._slots.get(connect_id)
        if slot is None or slot.state not in (FREE, QUARANTINED):
            return False
        slot.state, slot.owner = CLEANING, None
        return True

    def end_cleaning(self, connect_id: int, closed: bool) -> None:
        slot = self._slots[connect_id]
        if slot.state != CLEANING:
            return  # claimed by an incoming connection meanwhile
        if closed:
            slot.state = FREE
            self._hand_over(slot)
        else:
            slot.state = QUARANTINED
