"""Counts of the unsolicited lines modemd has no use for, per prefix (sans-IO: times come in).

Real modules print many lines nobody asked for (`+QIND: "csq",27,99`, `+QGPSURC: ...`, `+CTZE: ...`,
a garbled echo): they are normal, so the channel logs them at DEBUG and counts them here, per prefix,
for the `modemd_unsolicited_lines_total{prefix=...}` metric. A prefix is the line up to its ':', cut to
PREFIX_LEN characters; the label set stays bounded: at most MAX_PREFIXES distinct prefixes, then
"other", and lines with bytes that are not plain text are "garbled". The first line of each new prefix
may be announced once at INFO (`note` says when), rate-limited so that a noisy line cannot flood the
journal.
"""

from __future__ import annotations

import math
import string

PREFIX_LEN = 16
MAX_PREFIXES = 64
OTHER = "other"
GARBLED = "garbled"
INFO_BURST = 8          # new prefixes announced at INFO in a row ...
INFO_EVERY = 60.0       # ... then at most one per this many seconds
_PLAIN = frozenset(string.ascii_letters + string.digits + "+-_. &#^$>*")


def prefix_of(text: str) -> str:
    """`+QIND: "csq",27,99` -> `+QIND`, `Call Ready` -> `Call Ready`, noise -> `garbled`."""
    head = text.split(":", 1)[0].strip()[:PREFIX_LEN].strip()
    if not head:
        return GARBLED
    if not set(head) <= _PLAIN:
        return GARBLED
    return head


class UnsolicitedLines:
    """Per-prefix counts; `counts` is what the metrics provider publishes."""

    def __init__(self, max_prefixes: int = MAX_PREFIXES) -> None:
        self.max_prefixes = max_prefixes
        self.counts: dict[str, int] = {}
        self.total = 0
        self._tokens = float(INFO_BURST)
        self._refilled = -math.inf

    def note(self, text: str, now: float) -> tuple[str, bool]:
        """Count `text`; returns its prefix label and whether to announce it at INFO (the first
        line of a new prefix, while the rate limit allows)."""
        prefix = prefix_of(text)
        if prefix not in self.counts and len(self.counts) >= self.max_prefixes - 1:
            prefix = OTHER  # the last slot: everything beyond the bound
        new = prefix not in self.counts
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        self.total += 1
        return prefix, new and self._may_announce(now)

    def _may_announce(self, now: float) -> bool:
        if self._refilled == -math.inf:
            self._refilled = now
        elif now > self._refilled:
            self._tokens = min(INFO_BURST, self._tokens + (now - self._refilled) / INFO_EVERY)
            self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
