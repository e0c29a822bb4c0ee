"""Local listeners: bind unix/tcp/udp endpoints with the configured mode, group and loopback rule.

A unix socket file is created owner-only (umask 077), then given its group and mode, so nobody else
can connect in between. An existing file at the path is replaced only if it is a socket nobody listens
on (a stale file from a crashed run); anything else is an error that names the fix.
"""

from __future__ import annotations

import errno
import os
import socket as pysocket
import stat
import struct
from dataclasses import dataclass

import trio

from ..config import Endpoint

BACKLOG = 128


class EndpointError(Exception):
    """A listener could not be bound; str() is one line that names the fix."""


@dataclass
class UnixFile:
    """The socket file we created, removed on close only if it is still ours."""

    path: str
    inode: int

    def remove(self) -> None:
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass


def check_loopback(ep: Endpoint, allow_non_loopback: bool, what: str) -> None:
    if not ep.is_loopback and not allow_non_loopback:
        raise EndpointError(
            f"{what}: {ep} is not a loopback address; set allow_non_loopback = true to accept "
            "connections from the network"
        )


def _host(ep: Endpoint) -> str:
    return "127.0.0.1" if ep.host == "localhost" else (ep.host or "127.0.0.1")


def _family(host: str) -> int:
    return pysocket.AF_INET6 if ":" in host else pysocket.AF_INET


async def bind_stream(
    ep: Endpoint, *, what: str, mode: int = 0o660, gid: int | None = None,
    allow_non_loopback: bool = False,
) -> tuple[trio.SocketListener, UnixFile | None]:
    """A listening unix: or tcp: socket, and the file to remove at close (unix only)."""
    if ep.kind == "unix":
        return await _bind_unix(ep.path or "", what, mode, gid)
    if ep.kind != "tcp":
        raise EndpointError(f"{what}: {ep} is not a stream endpoint (use tcp: or unix:)")
    check_loopback(ep, allow_non_loopback, what)
    host = _host(ep)
    sock = trio.socket.socket(_family(host), pysocket.SOCK_STREAM)
    try:
        sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_REUSEADDR, 1)
        await sock.bind((host, ep.port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"{what}: cannot listen on {ep}: {exc.strerror or exc}") from None
    return trio.SocketListener(sock), None


async def bind_udp(ep: Endpoint, *, what: str, allow_non_loopback: bool = False):
    """A bound udp: socket (trio)."""
    check_loopback(ep, allow_non_loopback, what)
    host = _host(ep)
    sock = trio.socket.socket(_family(host), pysocket.SOCK_DGRAM)
    try:
        await sock.bind((host, ep.port))
    except OSError as exc:
        sock.close()
        raise EndpointError(f"{what}: cannot bind {ep}: {exc.strerror or exc}") from None
    return sock


async def _bind_unix(
    path: str, what: str, mode: int, gid: int | None
) -> tuple[trio.SocketListener, UnixFile]:
    _clear_stale(path, what)
    sock = trio.socket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        await sock.bind(path)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"{what}: cannot bind {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(BACKLOG)
        inode = os.lstat(path).st_ino
    except OSError as exc:
        sock.close()
        raise EndpointError(
            f"{what}: cannot set group/mode of {path}: {exc.strerror or exc} (is the daemon a "
            "member of that group?)"
        ) from None
    return trio.SocketListener(sock), UnixFile(path, inode)


def _clear_stale(path: str, what: str) -> None:
    """Remove a socket file nobody listens on; refuse to touch anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise EndpointError(
            f"{what}: {path} exists and is not a socket; remove it or pick another path"
        )
    if _someone_listens(path):
        raise EndpointError(f"{what}: {path} is in use: another process accepts connections on it")
    os.unlink(path)


def _someone_listens(path: str) -> bool:
    probe = pysocket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
        return True
    except BlockingIOError:
        return True  # backlog full: very much alive
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise EndpointError(f"cannot probe {path}: {exc.strerror or exc}") from None
    finally:
        probe.close()


def reset_stream(stream: trio.SocketStream) -> None:
    """Close with SO_LINGER 0: a TCP client sees ECONNRESET, not a clean EOF."""
    sock = stream.socket
    try:
        if sock.family in (pysocket.AF_INET, pysocket.AF_INET6):
            sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def peer_name(stream: trio.SocketStream) -> str:
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple):
        host = f"[{peer[0]}]" if ":" in peer[0] else peer[0]
        return f"{host}:{peer[1]}"
    return peer or "unix"
