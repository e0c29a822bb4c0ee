"""sd_notify and the systemd watchdog, without systemd-python.

systemd-python has no wheels and needs libsystemd-dev and a compiler to build
(docs/dependencies.md section 5), and the notify protocol is one datagram on an ``AF_UNIX`` socket,
so the sender is vendored here. Only path (``/run/systemd/notify``) and abstract (``@name``)
sockets are supported; any other ``NOTIFY_SOCKET`` (e.g. ``vsock:``) makes :func:`notify` return
False with a warning.

Every function returns False (and does nothing) when not started by systemd with ``Type=notify``,
so the daemon calls them unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

import trio

__all__ = [
    "notify",
    "ready",
    "reloading",
    "status",
    "stopping",
    "watchdog_interval",
    "watchdog_ping",
    "watchdog_task",
]

log = logging.getLogger(__name__)

_SEND_TIMEOUT = 1.0  # a datagram to pid 1; never block the trio loop for longer than this
_failure_logged = False


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=..."``) to ``$NOTIFY_SOCKET``.

    Returns True when the datagram was sent, False when ``NOTIFY_SOCKET`` is unset or the send
    failed (logged once at warning level; the daemon must not die because pid 1 is unreachable).
    """
    global _failure_logged
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    elif addr[0] != "/":
        if not _failure_logged:
            _failure_logged = True
            log.warning("NOTIFY_SOCKET=%s is not a unix socket path; notifications disabled", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_SEND_TIMEOUT)
            sock.connect(addr)
            sock.sendall(state.encode())
    except OSError as exc:
        if not _failure_logged:
            _failure_logged = True
            log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def ready(status: str | None = None) -> bool:
    """``READY=1`` (plus ``STATUS=``): for ``Type=notify``, the unit becomes active."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))


def status(text: str) -> bool:
    """``STATUS=``: the one-line text shown by ``systemctl status``."""
    return notify(f"STATUS={_one_line(text)}")


def reloading(status: str | None = None) -> bool:
    """``RELOADING=1`` on SIGHUP; send :func:`ready` again when the reload is done."""
    return notify("RELOADING=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))


def stopping() -> bool:
    """``STOPPING=1``: the daemon is shutting down (sent before the module's QPOWD)."""
    return notify("STOPPING=1")


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds (``WatchdogSec=``), or None when the watchdog is off.

    From ``WATCHDOG_USEC``; when ``WATCHDOG_PID`` is set it must be this process's pid (a child
    that inherited the environment must not ping).
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return value / 1_000_000


async def watchdog_task(is_healthy: Callable[[], bool], interval: float | None = None) -> None:
    """Ping ``WATCHDOG=1`` every ``interval / 2`` seconds while ``is_healthy()`` is True.

    ``interval`` defaults to :func:`watchdog_interval`; when the watchdog is off this returns at
    once. The caller's ``is_healthy`` says "the AT channel is making progress"; the trio loop's own
    health is implied, as this task only runs when the loop does. While unhealthy (or when
    ``is_healthy`` raises) no ping is sent, so systemd kills and restarts the wedged daemon after
    ``WatchdogSec``; this is logged once per unhealthy spell. Pinging resumes if health returns
    first. Runs until cancelled.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None or interval <= 0:
        log.debug("systemd watchdog not enabled")
        return
    period = interval / 2
    log.debug("systemd watchdog: %.3g s, pinging every %.3g s", interval, period)
    healthy_before = True
    while True:
        error: Exception | None = None
        try:
            healthy = bool(is_healthy())
        except Exception as exc:
            healthy, error = False, exc
        if healthy:
            if not healthy_before:
                log.warning("daemon healthy again; resuming systemd watchdog pings")
            watchdog_ping()
        elif healthy_before:
            log.error(
                "daemon unhealthy%s: stopping systemd watchdog pings, systemd will restart "
                "modemd in at most %.3g s unless it recovers",
                f" (health check raised {error!r})" if error else "",
                interval,
                exc_info=error,
            )
        healthy_before = healthy
        await trio.sleep(period)
