"""One direction of the emulated UART: bytes cross it at the line rate, measured in real elapsed time.

A producer (the module writing a reply, or the pty reader taking what the host wrote) `send()`s bytes;
they are scheduled back to back on the wire (a byte starts when the previous one has crossed, or now
if the line is idle) and a deliverer task hands them to the far end once they have fully crossed, in
slices of `SLICE` seconds of line time. `send()` returns while at most `FIFO` seconds of line time are
still queued, like a UART's transmit FIFO that the CPU refills before it runs dry, so consecutive
frames follow each other without a gap.

The schedule is absolute (a token bucket over trio's clock), never "sleep after each slice": a
deliverer that wakes late delivers everything that is due by then and the next slice keeps its own
due time, so timer rounding never lowers the rate. trio's sleeps wake on whole milliseconds, so the
last stretch of each wait is spun (real clock only); a 64-byte frame at 921600 baud arrives after its
0.7 ms, not after the next millisecond tick.

`slice_bytes()` (optional) overrides the slice: a few bytes per delivery, so that fragmented output
(Emulator.noise_fragment) crosses the line in pieces spread over time, as a real UART's does. Those
waits are slept, not spun (too many of them: spinning would keep a CPU busy for the whole transfer).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

SLICE = 0.005  # s of line time per delivery of a long stream
FIFO = 0.01  # s of line time a producer may queue ahead of the wire
SPIN = 0.0012  # s: waits shorter than this are spun with checkpoints instead of slept

Deliver = Callable[[memoryview, Any], Awaitable[None]]


def _precise_clock() -> bool:
    """Spin only on trio's real clock: a virtual clock (MockClock) never advances while we spin."""
    return type(trio.lowlevel.current_clock()).__name__ == "SystemClock"


async def sleep_until_precise(deadline: float) -> None:
    """trio.sleep_until() without the up-to-1 ms overshoot of the I/O wait's millisecond timeout."""
    if not _precise_clock():
        await trio.sleep_until(deadline)
        return
    if deadline - trio.current_time() > SPIN:
        await trio.sleep_until(deadline - SPIN)
    while trio.current_time() < deadline:
        await trio.lowlevel.checkpoint()


class _Segment:
    __slots__ = ("data", "start", "end", "rate", "sent", "tag")

    def __init__(self, data: memoryview, start: float, rate: float, tag: Any) -> None:
        self.data = data
        self.start = start
        self.rate = rate
        self.end = start + (len(data) / rate if rate else 0.0)
        self.sent = 0
        self.tag = tag

    def arrived(self, now: float) -> int:
        """How many of its bytes have fully crossed the wire at `now`."""
        if not self.rate or now >= self.end:
            return len(self.data)
        return min(len(self.data), max(0, int((now - self.start) * self.rate)))

    def next_due(self, step: int | None = None) -> float:
        """When the next slice of `step` bytes (default SLICE s; or the segment's last byte) has
        crossed."""
        if not self.rate:
            return self.start
        target = min(len(self.data), self.sent + (step or max(1, int(self.rate * SLICE))))
        return self.start + target / self.rate


class Line:
    """A paced, ordered byte pipe; `rate()` gives bytes/s (0 = unlimited) for bytes sent from now."""

    def __init__(
        self,
        deliver: Deliver,
        rate: Callable[[], float],
        slice_bytes: Callable[[], int | None] | None = None,
    ) -> None:
        self._deliver = deliver
        self._rate = rate
        self._slice_bytes = slice_bytes or (lambda: None)
        self._segments: deque[_Segment] = deque()
        self._end = -math.inf  # when the last queued byte will have crossed
        self._ready = trio.Event()
        self._idle = trio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        return sum(len(s.data) - s.sent for s in self._segments)

    async def send(self, data: bytes | memoryview, tag: Any = None) -> None:
        """Put `data` on the line; return once at most FIFO s of line time is still ahead."""
        if not data:
            return
        rate = self._rate()
        if not rate and not self._segments:
            await self._deliver(memoryview(data), tag)  # unlimited and idle: straight through
            return
        now = trio.current_time()
        segment = _Segment(memoryview(data), max(self._end, now), rate, tag)
        self._segments.append(segment)
        self._end = max(self._end, segment.end)
        self._idle = trio.Event()
        self._ready.set()
        await self.wait_room()

    async def wait_room(self) -> None:
        """Wait while more than FIFO s of line time is queued."""
        if self._end - FIFO > trio.current_time():
            await trio.sleep_until(self._end - FIFO)
        else:
            await trio.lowlevel.checkpoint()

    async def drain(self) -> None:
        """Wait until every queued byte has been delivered."""
        await self._idle.wait()

    async def run(self) -> None:
        """The deliverer: hands each slice to the far end once it has crossed."""
        while True:
            while not self._segments:
                self._idle.set()
                self._ready = trio.Event()
                await self._ready.wait()
            step = self._slice_bytes()
            if step:
                await trio.sleep_until(self._segments[0].next_due(step))
            else:
                await sleep_until_precise(self._segments[0].next_due())
            now = trio.current_time()
            while self._segments:
                segment = self._segments[0]
                n = segment.arrived(now)
                if n > segment.sent:
                    chunk = segment.data[segment.sent : n]
                    segment.sent = n
                    await self._deliver(chunk, segment.tag)
                if segment.sent < len(segment.data):
                    break
                self._segments.popleft()
