"""The reboot back-off schedule of the manuals' note 3, sans-IO (times are passed in).

S5/U/96 note 3 (seeds-comparison §2.2): "If the module has been rebooted for 3 consecutive times due
to a failed AT command, it can immediately be rebooted for the fourth time. If the command fails
again, reboot the module for the fifth time in 10 minutes. If the command fails, reboot for the
sixth time in 30 minutes, and if the command still fails, reboot for the seventh time in 1 hour."

modemd's reading, with the two policies the manuals leave open:

* reboots 1-4 of a run of consecutive reboots go at once; the 5th waits 10 min, the 6th 30 min,
  the 7th and every later one 1 h (U/96 "etc.", RU "gradually increase": capped at one hour);
* a delay counts from the moment the reboot is asked for (the failure), not from the previous
  reboot, so the module always rests at least that long;
* every non-zero delay gets a random extra of up to ``jitter`` times itself (0.1: 600-660 s), so a
  fleet that lost the network together does not reboot in step; zero delays stay zero;
* the run of consecutive reboots ends (the count goes back to 0) once the module has been serving
  without interruption for ``healthy_reset`` seconds.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

IMMEDIATE_REBOOTS = 4                 # "3 consecutive times ... immediately for the fourth time"
STEP_DELAYS = (600.0, 1800.0)         # the 5th after 10 min, the 6th after 30 min
CAP_DELAY = 3600.0                    # the 7th after 1 h, and every hour after that


@dataclass(frozen=True)
class RebootRecord:
    requested: float   # when the reboot was asked for
    due: float         # when it was allowed to run
    number: int        # its place in the run of consecutive reboots (1-based)
    reason: str


class RebootSchedule:
    """When the next reboot may happen, and why the previous ones did (attributes for metrics)."""

    def __init__(
        self,
        *,
        healthy_reset: float = 3600.0,
        jitter: float = 0.1,
        rng: Callable[[], float] = random.random,
        immediate: int = IMMEDIATE_REBOOTS,
        step_delays: tuple[float, ...] = STEP_DELAYS,
        cap_delay: float = CAP_DELAY,
        history: int = 32,
    ) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError(f"reboot jitter must be a fraction 0..1, got {jitter!r}")
        self.healthy_reset = healthy_reset
        self.jitter = jitter
        self._rng = rng
        self.immediate = immediate
        self.step_delays = tuple(step_delays)
        self.cap_delay = cap_delay
        self.count = 0                        # reboots in the current run of consecutive reboots
        self.total = 0                        # reboots since start
        self.next_reboot_time: float | None = None
        self.pending_reason: str | None = None
        self.last_reason: str | None = None
        self.last_reboot_time: float | None = None
        self.reasons: Counter[str] = Counter()
        self.history: deque[RebootRecord] = deque(maxlen=history)
        self.healthy_since: float | None = None
        self._requested: float | None = None

    # -- the schedule -------------------------------------------------------------------------
    def base_delay(self, number: int) -> float:
        """The manuals' delay before reboot `number` of a run (1-based), without jitter."""
        if number <= self.immediate:
            return 0.0
        index = number - self.immediate - 1
        if index < len(self.step_delays):
            return self.step_delays[index]
        return self.cap_delay

    def request(self, now: float, reason: str) -> float:
        """A reboot is needed: return the time it may run (also in `next_reboot_time`).

        Asking again before `rebooted()` keeps the first due time (and the first reason).
        """
        if self.next_reboot_time is not None:
            return self.next_reboot_time
        self.refresh(now)
        self.healthy_since = None
        delay = self.base_delay(self.count + 1)
        if delay > 0 and self.jitter > 0:
            delay += delay * self.jitter * self._rng()
        self.next_reboot_time = now + delay
        self.pending_reason = reason
        self._requested = now
        return self.next_reboot_time

    def rebooted(self, now: float) -> RebootRecord:
        """The reboot asked for by `request()` is being done now."""
        reason = self.pending_reason or "unspecified"
        requested = self._requested if self._requested is not None else now
        self.count += 1
        self.total += 1
        self.reasons[_kind(reason)] += 1
        record = RebootRecord(requested, now, self.count, reason)
        self.history.append(record)
        self.last_reason = reason
        self.last_reboot_time = now
        self.next_reboot_time = None
        self.pending_reason = None
        self._requested = None
        return record

    # -- the healthy period -------------------------------------------------------------------
    def serving(self, now: float) -> None:
        """The module serves (PDP context up); starts the healthy clock if it is not running."""
        if self.healthy_since is None:
            self.healthy_since = now
        self.refresh(now)

    def interrupted(self, now: float) -> None:
        """Serving stopped (for any reason): a long enough healthy spell still ends the run."""
        self.refresh(now)
        self.healthy_since = None

    def refresh(self, now: float) -> bool:
        """Reset the count if the module has served for `healthy_reset` s; True if it did."""
        if (
            self.count
            and self.healthy_since is not None
            and now - self.healthy_since >= self.healthy_reset
        ):
            self.count = 0
            return True
        return False

    def seconds_until_reboot(self, now: float) -> float | None:
        if self.next_reboot_time is None:
            return None
        return max(0.0, self.next_reboot_time - now)


def _kind(reason: str) -> str:
    """The metric label of a reason: its text up to the first ':' ("qiact_timeout: ...")."""
    return reason.split(":", 1)[0].strip() or "unspecified"
