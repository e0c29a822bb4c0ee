"""Fair turns on the one serial line: which socket may queue its next QISEND/QIRD.

The AT channel runs one command at a time, FIFO. Left alone, a socket with two busy pumps and a deep
backlog would keep the queue full of its own commands. Here every data command first takes a turn;
at most `depth` turns are out at once (2 keeps the channel busy between commands) and a freed turn
goes to the waiting socket served least recently. Bulk sockets thus rotate round-robin, and a socket
that was idle (a small interactive message) goes ahead of them: its last turn is the oldest.
Commands outside the data path (QIOPEN, QICLOSE, ACK queries, the supervisor's) skip the scheduler
and wait behind at most `depth` data commands.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import trio


class _Turn:
    __slots__ = ("key", "seq", "event", "granted")

    def __init__(self, key: Hashable, seq: int) -> None:
        self.key = key
        self.seq = seq
        self.event = trio.Event()
        self.granted = False


class TurnScheduler:
    def __init__(self, depth: int = 2) -> None:
        self.depth = depth
        self.busy = 0
        self._waiting: list[_Turn] = []
        self._served: dict[Hashable, int] = {}
        self._tick = 0
        self._seq = 0
        self.grants = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self, key: Hashable) -> AsyncIterator[None]:
        """Hold one of the `depth` slots while the command for socket `key` runs."""
        await self._take(key)
        try:
            yield
        finally:
            self._release()

    async def take(self, key: Hashable) -> None:
        """Take a slot without the context manager (pipelining holds one per queued command);
        every successful take() needs exactly one release()."""
        await self._take(key)

    def try_take(self, key: Hashable) -> bool:
        """Take a free slot now or not at all: a socket that already holds one must never wait
        for a second (two sockets each holding one and waiting for another stop every command)."""
        if self.busy < self.depth and not self._waiting:
            self.busy += 1
            self._mark(key)
            return True
        return False

    def release(self) -> None:
        self._release()

    async def _take(self, key: Hashable) -> None:
        if self.busy < self.depth and not self._waiting:
            # cancellation is checked before the slot is taken: a caller cancelled here must not
            # keep a slot it never gets to release (two such leaks stopped every data command).
            # No yield after it: the caller's command is written at once, and it yields waiting
            # for the answer anyway (a yield here cost a scheduler pass on every small message).
            await trio.lowlevel.checkpoint_if_cancelled()
            self.busy += 1
            self._mark(key)
            return
        self._seq += 1
        turn = _Turn(key, self._seq)
        self._waiting.append(turn)
        try:
            await turn.event.wait()
        except BaseException:
            if turn.granted:
                self._release()
            else:
                self._waiting.remove(turn)
            raise

    def _mark(self, key: Hashable) -> None:
        self._tick += 1
        self._served[key] = self._tick
        self.grants += 1

    def _release(self) -> None:
        self.busy -= 1
        if not self._waiting:
            return
        turn = min(self._waiting, key=lambda t: (self._served.get(t.key, 0), t.seq))
        self._waiting.remove(turn)
        self.busy += 1
        turn.granted = True
        self._mark(turn.key)
        turn.event.set()

    def forget(self, key: Hashable) -> None:
        """The socket is gone: a new socket on the same connect_id starts with a fresh history."""
        self._served.pop(key, None)
