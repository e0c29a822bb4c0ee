"""The control socket: a small versioned JSON-lines protocol on a unix stream socket (for modemctl).

Protocol, version 1. One JSON object per line (UTF-8, `\\n`-terminated, at most `max_line` bytes); a
client may send several requests on one connection, each answered in order:

    -> {"v": 1, "id": 7, "cmd": "status", "args": {}}
    <- {"v": 1, "id": 7, "ok": true, "result": {...}}
    <- {"v": 1, "id": 7, "ok": false, "error": "unknown command 'stauts'"}

`id` is echoed back (any JSON value; null when the request could not be read). `args` is optional and
must be an object. Answers to unreadable requests have `"id": null`; an over-long line is answered
and the connection closed.

Access control. The socket file is created with `mode` and `group` (so the file system decides who
may connect at all). Commands in `privileged` (default: at, reboot, reload, reconnect) additionally
check the peer's credentials from SO_PEERCRED: allowed for uid 0, the daemon's own uid, and members
of the socket's group. Other commands (status, connections, ping, resolve, ...) are open to anyone who
can connect.

Handlers: `async def handler(args: dict, peer: Peer) -> jsonable`. Raise `ControlError("text")` for
an error answer the client should see as is; any other exception is logged with its traceback and
answered as "internal error: ...".

Built-in commands (a handler of the same name wins): `version` -> {"protocol": 1, "daemon": "x.y.z"}
and `commands` -> sorted list of command names.
"""

from __future__ import annotations

import errno
import grp
import json
import logging
import os
import pwd
import socket as stdsocket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import trio

log = logging.getLogger("modemd.control")

PROTOCOL_VERSION = 1
DEFAULT_SOCKET = "/run/modemd/control.sock"
PRIVILEGED = frozenset({"at", "reboot", "reload", "reconnect"})
MAX_LINE = 64 * 1024
MAX_CLIENTS = 16
READ_TIMEOUT = 30.0     # seconds a connected client may take to send (the rest of) a request
WRITE_TIMEOUT = 10.0    # seconds a client may take to read an answer
HANDLER_TIMEOUT = 600.0  # upper bound for one command (AT+QIACT alone may take 150 s)

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


class ControlError(Exception):
    """An error answer whose text the client sees as is."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The connecting process, from SO_PEERCRED."""

    pid: int
    uid: int
    gid: int

    @classmethod
    def from_ucred(cls, raw: bytes) -> Peer:
        return cls(*_UCRED.unpack(raw[: _UCRED.size]))


Handler = Callable[[dict[str, Any], Peer], Awaitable[Any]]


def peer_credentials(sock: Any) -> Peer:
    """SO_PEERCRED of a connected AF_UNIX socket (stdlib or trio socket)."""
    return Peer.from_ucred(sock.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, _UCRED.size))


def _proc_groups(pid: int) -> set[int] | None:
    """Supplementary groups of a live process from /proc (None when hidden, e.g. ProtectProc=)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
    except (OSError, ValueError):
        return None
    return None


def _nss_member(uid: int, gid: int) -> bool:
    """Whether the user `uid` is in group `gid` by the user and group databases."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    if user.pw_gid == gid:
        return True
    try:
        return user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def is_authorized(
    peer: Peer,
    *,
    daemon_uid: int,
    group_gid: int | None,
    proc_groups: Callable[[int], set[int] | None] = _proc_groups,
    nss_member: Callable[[int, int], bool] = _nss_member,
) -> bool:
    """May `peer` run privileged commands: root, the daemon's uid, or a member of `group_gid`."""
    if peer.uid == 0 or peer.uid == daemon_uid:
        return True
    if group_gid is None:
        return False
    if peer.gid == group_gid:
        return True
    groups = proc_groups(peer.pid) if peer.pid > 0 else None
    if groups is not None and group_gid in groups:
        return True
    return nss_member(peer.uid, group_gid)


def resolve_group(group: str | int | None) -> int | None:
    """A group name or gid to a gid; None stays None. Raises ControlError for an unknown name."""
    if group is None or group == "":
        return None
    if isinstance(group, int):
        return group
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlError(f"control socket group {group!r} does not exist") from None


def _encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


class ControlServer:
    """Serve the control protocol on a unix socket; see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: int = 0o660,
        group: str | int | None = None,
        handlers: dict[str, Handler] | None = None,
        privileged: Iterable[str] = PRIVILEGED,
        *,
        max_line: int = MAX_LINE,
        max_clients: int = MAX_CLIENTS,
        read_timeout: float = READ_TIMEOUT,
        handler_timeout: float = HANDLER_TIMEOUT,
        version: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.mode = mode
        self.group = group
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.privileged = frozenset(privileged)
        self.max_line = max_line
        self.max_clients = max_clients
        self.read_timeout = read_timeout
        self.handler_timeout = handler_timeout
        self.daemon_uid = os.geteuid()
        self.group_gid: int | None = None   # the socket file's group, set by run()
        self.clients = 0
        self._inode: tuple[int, int] | None = None
        if version is None:
            from . import __version__ as version
        self.version = version

    # -- socket file ------------------------------------------------------------------------------
    def _check_existing(self) -> None:
        """Refuse to replace anything but a stale socket; refuse if a live server answers."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise ControlError(f"{self.path} exists and is not a socket; not replacing it")
        probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM | stdsocket.SOCK_CLOEXEC)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except (ConnectionRefusedError, FileNotFoundError):
            return      # stale: nobody listens; bind() + rename() below replace it
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return
            raise ControlError(f"cannot probe existing {self.path}: {exc.strerror}") from None
        else:
            raise ControlError(f"{self.path} is in use by a running process (another modemd?)")
        finally:
            probe.close()

    async def _bind(self) -> trio.socket.SocketType:
        """Bind on a temporary name, set mode/group, then rename over the final path (atomic)."""
        self._check_existing()
        gid = resolve_group(self.group)
        directory = os.path.dirname(self.path) or "."
        tmp = os.path.join(directory, f".{os.path.basename(self.path)}.{os.getpid()}.tmp")
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            await sock.bind(tmp)
            try:
                os.chmod(tmp, self.mode)
                if gid is not None:
                    os.chown(tmp, -1, gid)
                os.rename(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            sock.listen(self.max_clients)
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot create control socket {self.path}: {exc.strerror or exc}") from None
        except BaseException:
            sock.close()
            raise
        st = os.stat(self.path)
        self._inode = (st.st_dev, st.st_ino)
        self.group_gid = st.st_gid
        return sock

    def _unlink(self) -> None:
        """Remove the socket file if it is still the one we created."""
        try:
            st = os.lstat(self.path)
            if self._inode == (st.st_dev, st.st_ino):
                os.unlink(self.path)
        except OSError:
            pass

    # -- serving ----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Create the socket and serve until cancelled; the socket file is removed on exit."""
        sock = await self._bind()
        log.info("control socket listening on %s", self.path)
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._client, conn)
        finally:
            sock.close()
            self._unlink()

    async def _client(self, conn: trio.socket.SocketType) -> None:
        stream = trio.SocketStream(conn)
        try:
            try:
                peer = peer_credentials(conn)
            except OSError as exc:
                log.warning("control: no peer credentials: %s", exc)
                return
            if self.clients >= self.max_clients:
                await self._send(stream, {"id": None, "ok": False, "error": "too many clients"})
                return
            self.clients += 1
            try:
                await self._serve(stream, peer)
            finally:
                self.clients -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _send(self, stream: trio.SocketStream, answer: dict[str, Any]) -> bool:
        with trio.move_on_after(WRITE_TIMEOUT):
            await stream.send_all(_encode({"v": PROTOCOL_VERSION, **answer}))
            return True
        return False

    async def _serve(self, stream: trio.SocketStream, peer: Peer) -> None:
        buf = bytearray()
        while True:
            line: bytes | None = None
            with trio.move_on_after(self.read_timeout):
                while (nl := buf.find(b"\n")) < 0:
                    if len(buf) > self.max_line:
                        break
                    data = await stream.receive_some(65536)
                    if not data:
                        return  # client done (a partial last line is ignored)
                    buf += data
                else:
                    line = bytes(buf[:nl])
                    del buf[: nl + 1]
            if line is None:
                if len(buf) > self.max_line:
                    await self._send(stream, {"id": None, "ok": False,
                                              "error": f"request longer than {self.max_line} bytes"})
                # else: read deadline passed; an idle client is simply disconnected
                return
            if len(line) > self.max_line:
                await self._send(stream, {"id": None, "ok": False,
                                          "error": f"request longer than {self.max_line} bytes"})
                return
            if not line.strip():
                continue
            answer = await self.dispatch(line, peer)
            if not await self._send(stream, answer):
                return

    async def dispatch(self, line: bytes, peer: Peer) -> dict[str, Any]:
        """The answer (without "v") to one request line from `peer`."""
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"id": None, "ok": False, "error": f"invalid JSON: {exc}"}
        if not isinstance(request, dict):
            return {"id": None, "ok": False, "error": "a request must be a JSON object"}
        rid = request.get("id")
        if request.get("v") != PROTOCOL_VERSION:
            return {"id": rid, "ok": False,
                    "error": f"unsupported protocol version {request.get('v')!r} "
                             f"(this modemd speaks {PROTOCOL_VERSION})"}
        cmd = request.get("cmd")
        args = request.get("args", {})
        if args is None:
            args = {}
        if not isinstance(cmd, str) or not cmd:
            return {"id": rid, "ok": False, "error": "missing \"cmd\""}
        if not isinstance(args, dict):
            return {"id": rid, "ok": False, "error": "\"args\" must be an object"}
        handler = self.handlers.get(cmd) or self._builtin(cmd)
        if handler is None:
            return {"id": rid, "ok": False, "error": f"unknown command {cmd!r}"}
        if cmd in self.privileged and not is_authorized(
            peer, daemon_uid=self.daemon_uid, group_gid=self.group_gid
        ):
            log.warning("control: refused %r for pid %d uid %d", cmd, peer.pid, peer.uid)
            return {"id": rid, "ok": False,
                    "error": f"permission denied: {cmd!r} needs root, the modemd user "
                             "or membership in the control socket's group"}
        result: Any = None
        try:
            with trio.move_on_after(self.handler_timeout) as scope:
                result = await handler(args, peer)
        except ControlError as exc:
            return {"id": rid, "ok": False, "error": str(exc)}
        except trio.TooSlowError:
            return {"id": rid, "ok": False, "error": f"{cmd}: timed out"}
        except Exception as exc:
            log.exception("control command %r failed", cmd)
            return {"id": rid, "ok": False, "error": f"internal error: {exc!r}"}
        if scope.cancelled_caught:
            return {"id": rid, "ok": False,
                    "error": f"{cmd}: no result within {self.handler_timeout:g} s"}
        try:
            _encode({"result": result})
        except (TypeError, ValueError) as exc:
            log.error("control command %r returned a value that is not JSON: %r", cmd, exc)
            return {"id": rid, "ok": False, "error": f"internal error: result is not JSON ({exc})"}
        return {"id": rid, "ok": True, "result": result}

    def _builtin(self, cmd: str) -> Handler | None:
        if cmd == "version":
            async def version(args: dict[str, Any], peer: Peer) -> Any:
                return {"protocol": PROTOCOL_VERSION, "daemon": self.version}
            return version
        if cmd == "commands":
            async def commands(args: dict[str, Any], peer: Peer) -> Any:
                return sorted(set(self.handlers) | {"version", "commands"})
            return commands
        return None

