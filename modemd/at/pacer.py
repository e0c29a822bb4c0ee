"""When to read the port next, so that a bulk stream costs about one wake-up per two frames.

A UART (or the tty layer above it) hands bytes over in small bursts, so a 1500-byte `+QIRD` answer
or direct push at 921600 baud arrives in several reads, at 115200 in dozens, each costing a wake-up
of the daemon (on this class of machine a wake-up, not the parsing, is most of the CPU a frame costs).
Two waits avoid them:

- inside a payload: nothing else can arrive on the line before the payload's last byte, so waiting
  until then costs no latency (the payload is useless until complete);
- between frames while the line is saturated and no command is in flight: the module is streaming
  (direct push), the next frames are already on the wire, so wait until about two 1500-byte frames
  are buffered before reading again (LINGER_BYTES: one wake-up, one scheduler pass and one timer
  per two frames instead of per frame; a wake-up costs more than the parsing of a frame). The
  caller wakes the reader early when it writes a command. Never when a read held more than that:
  then the reader is behind the line and must not wait at all.

The waits come from the *measured* arrival rate (bytes over the time the line was known busy), never
from the configured baud, so a USB port far faster than its nominal baud is not slowed; the estimate
moves up at once and down slowly, and every wait is capped at MAX_WAIT, so a wrong guess costs at
most one such wait. Sans-IO: times and byte counts in, a number of seconds out; no clock, no trio.
"""

from __future__ import annotations

MIN_WAIT = 0.001  # s: shorter waits are not worth a timer
MAX_WAIT = 0.05   # s: the longest wait on one estimate (also bounds what piles up in the tty)
MIN_MISSING = 512  # bytes: a smaller rest is read as it comes (a timer wakes ~1 ms late, which a
                   # small message would feel, while a bulk stream saves nothing worth it)
MIN_PERIOD = 0.01  # s: a busy period shorter than this gives no rate sample (once one exists)
SATURATED = 0.75  # a read interval that carried this share of the rate: the line is streaming
#: bytes waited for between reads of a stream: two 1500-byte pushes with their headers. It stays
#: below BEHIND and below the 4 KB that one read of an N_TTY line returns at most (its read
#: buffer), so a stream read this way is never taken for a reader that fell behind
LINGER_BYTES = 3072
BEHIND = 3584  # bytes: a larger read held more than it waited for: behind the line, never wait


class ReadPacer:
    def __init__(self) -> None:
        self.rate: float | None = None   # bytes/s measured while the line was busy
        self._busy_since: float | None = None  # the line has been busy since then, without a gap
        self._busy_bytes = 0             # bytes read after _busy_since
        self._last_read: float | None = None
        self.waits = 0
        self.lingers = 0

    def after_read(self, now: float, received: int, missing: int, idle: bool = False) -> float:
        """`received` bytes were just read at `now`, leaving `missing` payload bytes to come;
        `idle`: no command is in flight. How long to wait before reading again (0: at once)."""
        self._measure(now, received)
        previous, self._last_read = self._last_read, now
        streaming = self._streams(now, previous, received, idle)
        if missing:
            self._busy(now)
            wait = self._payload_wait(missing)
            if not streaming:
                return wait
            # a stream's read ends anywhere in a frame: wait for the payload's rest and the
            # frames behind it alike, so every wake-up reads about LINGER_BYTES
            self.lingers += 1
            return min(max(wait, LINGER_BYTES / self.rate), MAX_WAIT)
        if not streaming:
            self._busy_since = None
            return 0.0
        self._busy(now)  # streaming: the line stays busy while we wait
        self.lingers += 1
        return min(LINGER_BYTES / self.rate, MAX_WAIT)

    def _streams(self, now: float, previous: float | None, received: int, idle: bool) -> bool:
        """The module streams to an idle channel: no command is in flight, the read interval
        carried the line's measured rate and we are not behind it (`rate` is then known)."""
        rate = self.rate
        if not idle or not rate or previous is None or now <= previous:
            return False
        return (received <= BEHIND and received / (now - previous) >= SATURATED * rate
                and LINGER_BYTES / rate >= MIN_WAIT)

    def nothing_read(self) -> None:
        """A read after a wait found nothing: the stream ended, no sample from that wait."""
        self._busy_since = None

    def _busy(self, now: float) -> None:
        if self._busy_since is None:
            self._busy_since, self._busy_bytes = now, 0

    def _measure(self, now: float, received: int) -> None:
        """The rate over the whole busy period: the tty hands bytes over in bursts, so one
        interval between two reads can make a line look several times faster than it is."""
        since = self._busy_since
        if since is None:
            return
        self._busy_bytes += received
        if now - since < MIN_PERIOD:
            if self.rate is None and now > since:
                self.rate = self._busy_bytes / (now - since)
            return
        sample = self._busy_bytes / (now - since)
        rate = self.rate
        self.rate = sample if rate is None or sample > rate else 0.75 * rate + 0.25 * sample

    def _payload_wait(self, missing: int) -> float:
        if missing < MIN_MISSING or not self.rate:
            return 0.0
        wait = missing / self.rate
        if wait < MIN_WAIT:
            return 0.0
        self.waits += 1
        return min(wait, MAX_WAIT)
