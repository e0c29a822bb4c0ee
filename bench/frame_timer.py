"""The AT reader's per-frame work timed inside a running daemon (issue 16): a wrapper around the cli.

    MODEMD_BENCH_DAEMON_SCRIPT=bench/frame_timer.py MODEMD_FRAME_TIMER=/tmp/t.json \\
        .venv/bin/python bench/cpu_probe.py down --seconds 8 --rounds 3 [--daemon-src DIR]

(`bench/frame_cost.py --in-situ` runs that for several checkouts, back to back.) The daemon runs
as usual, with AtProtocol.receive, AtProtocol.next_event and AtChannel._dispatch timed
(perf_counter) minus the write into the local client (Bridge._deliver_nowait): the sans-IO and
dispatch layers' Python work per read of the tty, with cold caches and all, which a hot loop
(`bench/frame_cost.py`) underestimates several times. Every 64 pushed frames the totals and the
per-read samples are written to MODEMD_FRAME_TIMER as JSON. The timers add their own cost (a few
µs per frame), the same for every checkout measured.
"""

from __future__ import annotations

import json
import os
import sys
import time

from modemd.at.channel import AtChannel
from modemd.at.protocol import AtProtocol
from modemd.proxy.bridge import Bridge
from modemd.sockets.dispatcher import UrcDispatcher

OUT = os.environ.get("MODEMD_FRAME_TIMER", "/tmp/modemd-frame-timer.json")
clock = time.perf_counter


class Tally:
    def __init__(self) -> None:
        self.total = 0.0     # seconds in the timed functions, the client writes taken out
        self.frames = 0      # pushed frames routed
        self.reads = []      # per read that carried frames: [seconds, frames]
        self.read = 0.0      # the current read's seconds so far
        self.read_frames = 0

    def close_read(self) -> None:
        if self.read_frames:
            self.reads.append([self.read, self.read_frames])
        self.read = 0.0
        self.read_frames = 0

    def add(self, seconds: float) -> None:
        self.total += seconds
        self.read += seconds

    def dump(self) -> None:
        tmp = OUT + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"total": self.total, "frames": self.frames, "reads": self.reads[-20000:]}, f)
        os.replace(tmp, OUT)


tally = Tally()


def timed(orig, on_enter=None):
    def wrapper(*args, **kwargs):
        if on_enter is not None:
            on_enter()
        t = clock()
        try:
            return orig(*args, **kwargs)
        finally:
            tally.add(clock() - t)
    return wrapper


def frame_routed(orig):
    def wrapper(*args, **kwargs):
        tally.frames += 1
        tally.read_frames += 1
        if tally.frames % 64 == 0:
            tally.dump()
        return orig(*args, **kwargs)
    return wrapper


def untimed(orig):
    """The write into the client's socket (a syscall, not this layer's work): taken out."""
    def wrapper(*args, **kwargs):
        t = clock()
        try:
            return orig(*args, **kwargs)
        finally:
            tally.add(-(clock() - t))
    return wrapper


AtProtocol.receive = timed(AtProtocol.receive, on_enter=tally.close_read)
AtProtocol.next_event = timed(AtProtocol.next_event)
AtChannel._dispatch = timed(AtChannel._dispatch)
UrcDispatcher.route_push = frame_routed(UrcDispatcher.route_push)
Bridge._deliver_nowait = untimed(Bridge._deliver_nowait)

if __name__ == "__main__":
    from modemd.cli import main

    sys.exit(main())
