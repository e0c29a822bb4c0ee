"""A MockClock that jumps as soon as no byte can still be on its way, instead of after 50 ms.

Each autojump of a plain MockClock costs its threshold in real time, and the supervisor tests wait
hours of virtual time through hundreds of them (one SIM poll every 10 s). The threshold is there
because a byte written to a pty is handed to the reader by a kernel worker a moment later: until
then the loop looks idle though an answer is on its way. That moment can be made visible: polling
a tty's reading end runs its pending hand-over synchronously (n_tty_poll -> tty_buffer_flush_work),
so if no tty's input count changes across such a poll, nothing was in flight and the clock may jump
at once. Connected IP sockets (loopback hands segments over in a softirq), child processes (and
so their pipes) and busy threads have no such check: while any exists, the clock waits AUTOJUMP of
real idle time first, as the plain MockClock did. Unix sockets and pipes between two ends in this
process hand bytes over inside the write() itself. QUIET_CLOCK_DEBUG=1 prints each slow jump's
reason.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import termios
import threading

import trio.testing

FAST = 0.002     # real idle time before the in-flight check (only ptys and unix sockets open)
AUTOJUMP = 0.05  # real idle time before a jump while something unseeable is open


def quiet_clock() -> trio.testing.MockClock:
    """MockClock(autojump) whose jump waits for the kernel's pty hand-over, not for a fixed time.
    (MockClock cannot be subclassed: its instance gets its own _autojump.) A trio whose
    MockClock has no `_autojump` (private) gets the plain clock at AUTOJUMP: slower, still right."""
    plain_autojump = getattr(trio.testing.MockClock(), "_autojump", None)
    if not callable(plain_autojump):
        return trio.testing.MockClock(autojump_threshold=AUTOJUMP)
    clock = trio.testing.MockClock(autojump_threshold=FAST)
    plain_autojump = clock._autojump
    clock.fast_jumps = clock.slow_jumps = 0

    def autojump() -> None:
        ttys, unseeable = _open_files()
        if unseeable:
            if clock.autojump_threshold < AUTOJUMP:
                clock.autojump_threshold = AUTOJUMP  # called again after AUTOJUMP of idle time
                return
        elif clock.autojump_threshold != FAST:
            clock.autojump_threshold = FAST
        if _bytes_were_in_flight(ttys):
            return  # they are readable now: the loop wakes their reader before any timer
        if unseeable:
            clock.slow_jumps += 1
            if os.environ.get("QUIET_CLOCK_DEBUG"):
                print("slow jump:", unseeable, os.environ.get("PYTEST_CURRENT_TEST"))
        else:
            clock.fast_jumps += 1
        plain_autojump()

    clock._autojump = autojump
    return clock


def _open_files() -> tuple[list[int], str]:
    """The tty fds of this process, and the first open file whose in-flight bytes cannot be seen
    ("" if none)."""
    ttys: list[int] = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own fd, closed by now
        if target.startswith("/dev/pts/") or target == "/dev/ptmx":
            ttys.append(fd)
        elif target.startswith("socket:") and _may_carry_ip(fd):
            return ttys, target
    if _busy_threads():
        return ttys, "a thread"
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return ttys, ""
    return ttys, "a child process"


def _busy_threads() -> set[str]:
    """Thread ids besides the main thread and trio's idle cached workers (which only wait for a
    job, up to 10 s after their last one; private to trio, so unknown means busy)."""
    tids = set(os.listdir("/proc/self/task")) - {str(threading.main_thread().native_id)}
    if not tids:
        return tids
    try:
        from trio._core._thread_cache import THREAD_CACHE

        idle = {str(w._thread.native_id) for w in list(THREAD_CACHE._idle_workers)}
    except (ImportError, AttributeError):
        idle = set()
    return tids - idle


def _may_carry_ip(fd: int) -> bool:
    """An IP socket other than a TCP listener (loopback hands segments over in a softirq, which a
    loaded machine may run late; a listener alone receives nothing but connections, whose client
    socket is in this process too or in a child)."""
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False  # closed meanwhile, or no socket
    try:
        if s.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        return not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    finally:
        s.close()


def _in_count(fd: int) -> int:
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return -1


def _bytes_were_in_flight(ttys: list[int]) -> bool:
    """Hand every tty its pending input (a zero-timeout poll does) and tell whether any got some."""
    if not ttys:
        return False
    before = [_in_count(fd) for fd in ttys]
    poller = select.poll()
    for fd in ttys:
        poller.register(fd, select.POLLIN)
    poller.poll(0)
    return [_in_count(fd) for fd in ttys] != before

