"""A short wait that a writer can cut short: the AT reader's pause between reads of a stream.

The reader pauses for a few milliseconds hundreds of times a second while the module streams
(at/pacer.py). Done as a trio timeout (`move_on_after` around an Event), every pause ends in a
Cancelled exception raised and caught through trio's cancel machinery. On a cold cache that path
was about a fifth of a download's CPU samples. A Linux timerfd waited for like any other fd
costs one settime instead, and a command written meanwhile fires it at once.

The timerfd counts real seconds, so it is used only while trio's clock does too; under a
test's MockClock the pause is the trio timeout (same behaviour, virtual time).
"""

from __future__ import annotations

import ctypes
import logging
import os

import trio

log = logging.getLogger("modemd.pause")

_CLOCK_MONOTONIC = 1
_TFD_CLOEXEC = 0o2000000
_TFD_NONBLOCK = 0o4000
_FIRE_NOW = 1e-9  # s: the shortest arming (0 would disarm the timer)


class _Timerfd:
    """timerfd_create/settime through libc (os.timerfd_* exists only from Python 3.13)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)  # the process's own libc
        self._settime_fn = libc.timerfd_settime
        # struct itimerspec {it_interval {sec, nsec}, it_value {sec, nsec}} as one array: an
        # item assignment is cheaper than a ctypes field of a nested Structure
        self._spec = (ctypes.c_long * 4)()
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_CLOEXEC | _TFD_NONBLOCK)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self.fd = fd

    def arm(self, seconds: float) -> None:
        """Fire once, `seconds` from now. Arming also clears an expiry not read yet (the kernel
        resets the timer's tick count), so a wait that starts with arm() never sees an old one
        and nothing needs to read the fd."""
        spec = self._spec
        sec = int(seconds)
        spec[2] = sec
        spec[3] = max(1, int((seconds - sec) * 1e9))
        if self._settime_fn(self.fd, 0, spec, None) < 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def close(self) -> None:
        os.close(self.fd)


def _real_seconds() -> bool:
    """trio's clock runs at the speed of CLOCK_MONOTONIC (the system clock, not a MockClock)."""
    clock = trio.lowlevel.current_clock()
    return 0.99 <= clock.deadline_to_sleep_time(clock.current_time() + 1.0) <= 1.0


def _open_timerfd() -> _Timerfd | None:
    try:
        return _Timerfd()
    except (OSError, AttributeError) as exc:  # not Linux, or no timerfd: trio's timeout does it
        log.debug("no timerfd (%s): pauses use trio timeouts", exc)
        return None


class Pause:
    """`await wait(seconds)` returns after `seconds` or at `cut()`, whichever comes first.
    One waiter at a time (the reader); `cut()` from any task, a no-op when nobody waits."""

    def __init__(self) -> None:
        self._timer: _Timerfd | None = None
        self._opened = False  # the timerfd was tried (on the first wait, inside trio.run)
        self._cut: trio.Event | None = None
        self._waiting = False
        self.cuts = 0

    @property
    def uses_timerfd(self) -> bool:
        return self._timer is not None

    async def wait(self, seconds: float) -> None:
        if not self._opened:
            self._opened = True
            self._timer = _open_timerfd() if _real_seconds() else None
        timer = self._timer
        self._waiting = True
        try:
            if timer is None:
                self._cut = trio.Event()
                with trio.move_on_after(seconds):
                    await self._cut.wait()
            else:
                timer.arm(seconds)
                await trio.lowlevel.wait_readable(timer.fd)
        finally:
            self._waiting = False

    def cut(self) -> None:
        """End the wait in progress now (a command was written: its answer is due)."""
        if not self._waiting:
            return
        self.cuts += 1
        self._waiting = False
        if self._timer is None:
            assert self._cut is not None
            self._cut.set()
        else:
            self._timer.arm(_FIRE_NOW)

    def close(self) -> None:
        """Release the timerfd (the next wait opens a new one)."""
        if self._timer is not None:
            self._timer.close()
        self._timer, self._opened = None, False
