"""When to read the port next: inside a payload, once its rest should have crossed the line.

A UART (or the tty layer above it) hands bytes over in small bursts, so a 1500-byte `+QIRD` answer
or direct push at 921600 baud arrives in several reads, at 115200 in dozens, each costing a wake-up
of the daemon. Nothing else can arrive on the line before the payload's last byte, so waiting until
then costs no latency: the payload is useless until complete. The wait comes from the *measured*
arrival rate (bytes between two reads inside one payload), never from the configured baud, so a
USB port that is far faster than its nominal baud is not slowed; the estimate moves up at once and
down slowly, so a wrong guess costs at most one wait of MAX_WAIT.

Sans-IO: times and byte counts in, a number of seconds out; no clock, no trio.
"""

from __future__ import annotations

MIN_WAIT = 0.001  # s: shorter waits are not worth a timer
MAX_WAIT = 0.05   # s: the longest wait on one estimate


class ReadPacer:
    def __init__(self) -> None:
        self.rate: float | None = None   # bytes/s measured inside payloads
        self._busy_since: float | None = None  # the last read ended inside a payload, at this time
        self.waits = 0

    def after_read(self, now: float, received: int, missing: int) -> float:
        """`received` bytes were just read at `now`, leaving `missing` payload bytes to come:
        how long to wait before reading again (0: read at once)."""
        since = self._busy_since
        if since is not None and now > since:
            sample = received / (now - since)  # the line was busy since: a lower bound of its rate
            rate = self.rate
            self.rate = sample if rate is None or sample > rate else 0.75 * rate + 0.25 * sample
        self._busy_since = now if missing else None
        if not missing or not self.rate:
            return 0.0
        wait = missing / self.rate
        if wait < MIN_WAIT:
            return 0.0
        self.waits += 1
        return min(wait, MAX_WAIT)
