"""Counters of the proxy, per forward / listener / SOCKS server, as plain attributes for metrics."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FlowStats:
    name: str
    kind: str                     # "forward" | "listen" | "socks"
    bytes_up: int = 0             # local client -> module
    bytes_down: int = 0           # module -> local client
    opened: int = 0               # connections (or UDP peers) that got a module socket
    closed: int = 0
    active: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # open failures, by reason
    resets: Counter[str] = field(default_factory=Counter)   # local clients reset, by reason
    datagrams_up: int = 0
    datagrams_down: int = 0
    datagrams_dropped: Counter[str] = field(default_factory=Counter)  # by reason (datagrams.py)
    drops_logged: dict[str, float] = field(default_factory=dict, repr=False)  # reason -> when


class BufferGauge:
    """Bytes the proxy holds in its own memory right now (read, not yet written), and the peak."""

    __slots__ = ("current", "peak")

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0

    def add(self, n: int) -> None:
        self.current += n
        if self.current > self.peak:
            self.peak = self.current

    def sub(self, n: int) -> None:
        self.current -= n
