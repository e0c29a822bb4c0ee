"""Fair turns on the one serial line: which socket may queue its next AT command.

The AT channel runs one command at a time, FIFO. Left alone, a socket with two busy pumps and a deep
backlog would keep the queue full of its own commands. Here every per-socket command first takes a
turn; at most `depth` turns are out at once (2 keeps the channel busy between commands) and a freed
turn goes to the waiting socket served least recently. Bulk sockets thus rotate round-robin, and a
socket that was idle (a small interactive message) goes ahead of them: its last turn is the oldest.
A socket's chained send (socket.py) holds one turn for a chain of QISENDs: commands queued
meanwhile go first at its next SEND OK (the chain goes on behind them), and when another socket
waits for a turn the chain ends there and the socket takes a new turn.

Bookkeeping queries (AT+QISEND=id,0 ACK polls, the lost-URC AT+QIRD=id,0) take *background* turns:
at most `background_depth` of them are out at once, so sockets opened together, whose ACK timers
fire together, cannot fill the channel with a dozen queries while a data command waits behind them
(under a saturated 921600 line each query takes ~180 ms: eleven of them stalled a 64-byte echo 2 s).
A background turn still competes by least-recently-served, so it is never starved.
Commands outside the sockets (QIOPEN, QICLOSE, the supervisor's) skip the scheduler: they wait
behind at most `depth` socket commands, plus whatever unscheduled commands were queued before them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

import trio


class _Turn:
    __slots__ = ("key", "seq", "background", "event", "granted")

    def __init__(self, key: Hashable, seq: int, background: bool) -> None:
        self.key = key
        self.seq = seq
        self.background = background
        self.event = trio.Event()
        self.granted = False


class TurnScheduler:
    def __init__(self, depth: int = 2, background_depth: int = 1) -> None:
        self.depth = depth
        self.background_depth = min(background_depth, depth)
        self.busy = 0
        self.background_busy = 0
        self._waiting: list[_Turn] = []
        self._served: dict[Hashable, int] = {}
        self._tick = 0
        self._seq = 0
        self.grants = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def turn(self, key: Hashable, *, background: bool = False) -> AsyncIterator[None]:
        """Hold one of the `depth` slots while the command for socket `key` runs."""
        await self._take(key, background)
        try:
            yield
        finally:
            self._release(background)

    async def take(self, key: Hashable) -> None:
        """Take a slot without the context manager (a chained send holds it while its chain
        runs); every successful take() needs exactly one release()."""
        await self._take(key, False)

    def release(self) -> None:
        self._release(False)

    def _free(self, background: bool) -> bool:
        """A slot of this kind is free now. Waiting turns are granted the moment a slot frees, so
        while one is free, nobody who could use it is waiting."""
        if self.busy >= self.depth:
            return False
        return not background or self.background_busy < self.background_depth

    async def _take(self, key: Hashable, background: bool) -> None:
        if self._free(background):
            # cancellation is checked before the slot is taken: a caller cancelled here must not
            # keep a slot it never gets to release (two such leaks stopped every data command).
            # No yield after it: the caller's command is written at once, and it yields waiting
            # for the answer anyway (a yield here cost a scheduler pass on every small message).
            await trio.lowlevel.checkpoint_if_cancelled()
            self._grant(key, background)
            return
        self._seq += 1
        turn = _Turn(key, self._seq, background)
        self._waiting.append(turn)
        try:
            await turn.event.wait()
        except BaseException:
            if turn.granted:
                self._release(background)
            else:
                self._waiting.remove(turn)
            raise

    def _grant(self, key: Hashable, background: bool) -> None:
        self.busy += 1
        self.background_busy += background
        self._tick += 1
        self._served[key] = self._tick
        self.grants += 1

    def _release(self, background: bool) -> None:
        self.busy -= 1
        self.background_busy -= background
        while self._waiting and self.busy < self.depth:
            eligible = [t for t in self._waiting if self._free(t.background)]
            if not eligible:
                return
            turn = min(eligible, key=lambda t: (self._served.get(t.key, 0), t.seq))
            self._waiting.remove(turn)
            self._grant(turn.key, turn.background)
            turn.granted = True
            turn.event.set()

    def forget(self, key: Hashable) -> None:
        """The socket is gone: a new socket on the same connect_id starts with a fresh history."""
        self._served.pop(key, None)
