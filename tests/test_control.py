"""The control socket server: protocol, limits, socket file handling, SO_PEERCRED checks."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct

import pytest
import trio

from modemd.control import (
    PRIVILEGED,
    ControlError,
    ControlServer,
    Peer,
    is_authorized,
    peer_credentials,
    resolve_group,
)


async def echo(args, peer):
    return {"args": args, "peer": [peer.pid, peer.uid, peer.gid]}


async def fail(args, peer):
    raise ControlError("module is rebooting")


async def crash(args, peer):
    raise RuntimeError("bug")


async def not_json(args, peer):
    return {"x": object()}


async def slow(args, peer):
    await trio.sleep(30)


HANDLERS = {"status": echo, "reboot": echo, "fail": fail, "crash": crash, "not_json": not_json,
            "slow": slow}


class Client:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    async def send_line(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(self, obj) -> dict:
        await self.stream.send_all(json.dumps(obj).encode() + b"\n")
        return await self.answer()

    async def answer(self) -> dict:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    async def eof(self) -> bool:
        try:
            return await self.stream.receive_some() == b""
        except trio.BrokenResourceError:
            return True


_open: list[Client] = []


async def connect(path) -> Client:
    client = Client(await trio.open_unix_socket(str(path)))
    _open.append(client)
    return client


@pytest.fixture
async def close_clients():
    yield
    while _open:
        await _open.pop().stream.aclose()


@pytest.fixture
async def server(tmp_path, nursery, close_clients):
    srv = ControlServer(tmp_path / "control.sock", handlers=HANDLERS, handler_timeout=0.3,
                        read_timeout=0.5, max_clients=3, max_line=1024)
    await nursery.start(srv.run)
    yield srv


async def test_request_response(server):
    c = await connect(server.path)
    ans = await c.request({"v": 1, "id": 7, "cmd": "status", "args": {"a": 1}})
    assert ans == {"v": 1, "id": 7, "ok": True,
                   "result": {"args": {"a": 1}, "peer": [os.getpid(), os.getuid(), os.getgid()]}}
    # several requests on one connection, blank lines ignored, args optional or null
    await c.send_line(b"\n\n")
    assert (await c.request({"v": 1, "id": "x", "cmd": "status"}))["result"]["args"] == {}
    assert (await c.request({"v": 1, "id": 9, "cmd": "status", "args": None}))["ok"] is True


async def test_builtin_commands(server):
    c = await connect(server.path)
    ans = await c.request({"v": 1, "id": 1, "cmd": "version"})
    assert ans["result"]["protocol"] == 1 and ans["result"]["daemon"]
    ans = await c.request({"v": 1, "id": 2, "cmd": "commands"})
    assert "status" in ans["result"] and "version" in ans["result"]


@pytest.mark.parametrize(
    "line,error",
    [
        (b"not json", "invalid JSON"),
        (b"[1,2]", "must be a JSON object"),
        (b'{"v": 2, "id": 1, "cmd": "status"}', "unsupported protocol version 2"),
        (b'{"id": 1, "cmd": "status"}', "unsupported protocol version None"),
        (b'{"v": 1, "id": 1}', 'missing "cmd"'),
        (b'{"v": 1, "id": 1, "cmd": "status", "args": [1]}', '"args" must be an object'),
        (b'{"v": 1, "id": 1, "cmd": "stauts"}', "unknown command 'stauts'"),
        (b'{"v": 1, "id": 1, "cmd": "fail"}', "module is rebooting"),
        (b'{"v": 1, "id": 1, "cmd": "crash"}', "internal error: RuntimeError('bug')"),
        (b'{"v": 1, "id": 1, "cmd": "not_json"}', "result is not JSON"),
        (b'{"v": 1, "id": 1, "cmd": "slow"}', "slow: no result within 0.3 s"),
        (b"\xff\xfe{}", "invalid JSON"),
    ],
)
async def test_errors(server, line, error, caplog):
    c = await connect(server.path)
    await c.send_line(line + b"\n")
    ans = await c.answer()
    assert ans["ok"] is False and ans["v"] == 1
    assert error in ans["error"]
    # the connection survives an error answer
    assert (await c.request({"v": 1, "id": 2, "cmd": "status"}))["ok"] is True


async def test_crash_is_logged(server, caplog):
    c = await connect(server.path)
    await c.request({"v": 1, "id": 1, "cmd": "crash"})
    assert "control command 'crash' failed" in caplog.text and "RuntimeError: bug" in caplog.text


async def test_line_too_long(server):
    c = await connect(server.path)
    await c.send_line(b'{"v": 1, "cmd": "status", "pad": "' + b"x" * 5000)
    ans = await c.answer()
    assert ans == {"v": 1, "id": None, "ok": False, "error": "request longer than 1024 bytes"}
    assert await c.eof()


async def test_long_line_with_newline_in_one_chunk(server):
    c = await connect(server.path)
    await c.send_line(b"x" * 1030 + b"\n")
    assert "longer than" in (await c.answer())["error"]
    assert await c.eof()


async def test_idle_client_is_disconnected(server):
    c = await connect(server.path)
    await c.send_line(b'{"v": 1,')
    with trio.fail_after(3):
        assert await c.eof()


async def test_max_clients(server):
    held = [await connect(server.path) for _ in range(3)]
    for c in held:  # make sure all three are being served
        assert (await c.request({"v": 1, "id": 1, "cmd": "status"}))["ok"]
    extra = await connect(server.path)
    assert (await extra.answer())["error"] == "too many clients"
    assert await extra.eof()
    await held[0].stream.aclose()
    await trio.sleep(0.05)
    again = await connect(server.path)
    assert (await again.request({"v": 1, "id": 1, "cmd": "status"}))["ok"]


async def test_client_disconnect_mid_request_is_harmless(server):
    c = await connect(server.path)
    await c.send_line(b'{"v": 1, "id": 1, "cmd": "slow"}\n')
    await c.stream.aclose()
    await trio.sleep(0.4)
    c2 = await connect(server.path)
    assert (await c2.request({"v": 1, "id": 1, "cmd": "status"}))["ok"]


# -- socket file ------------------------------------------------------------------------------------
async def test_socket_mode_group_and_cleanup(tmp_path):
    path = tmp_path / "c.sock"
    gid = 20 if _group_exists(20) else os.getgid()
    srv = ControlServer(path, mode=0o660, group=gid, handlers=HANDLERS)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.run)
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == gid and srv.group_gid == gid
        assert [p.name for p in tmp_path.iterdir()] == ["c.sock"]  # no temporary left
        nursery.cancel_scope.cancel()
    assert not path.exists()


def _group_exists(gid: int) -> bool:
    import grp

    try:
        grp.getgrgid(gid)
        return True
    except KeyError:
        return False


async def test_group_by_name(tmp_path):
    import grp

    name = grp.getgrgid(os.getgid()).gr_name
    srv = ControlServer(tmp_path / "c.sock", group=name)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.run)
        assert os.stat(srv.path).st_gid == os.getgid()
        nursery.cancel_scope.cancel()


async def test_unknown_group(tmp_path):
    srv = ControlServer(tmp_path / "c.sock", group="no-such-group-xyz")
    with pytest.raises(ControlError, match="group 'no-such-group-xyz' does not exist"):
        await srv.run()
    assert not (tmp_path / "c.sock").exists()
    assert list(tmp_path.iterdir()) == []


async def test_stale_socket_is_replaced(tmp_path, close_clients):
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    srv = ControlServer(path, handlers=HANDLERS)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.run)
        c = await connect(path)
        assert (await c.request({"v": 1, "id": 1, "cmd": "status"}))["ok"]
        nursery.cancel_scope.cancel()


async def test_live_socket_is_not_replaced(tmp_path, close_clients):
    path = tmp_path / "c.sock"
    first = ControlServer(path, handlers=HANDLERS)
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        with pytest.raises(ControlError, match="in use by a running process"):
            await ControlServer(path).run()
        c = await connect(path)  # the first one still serves
        assert (await c.request({"v": 1, "id": 1, "cmd": "status"}))["ok"]
        nursery.cancel_scope.cancel()


async def test_regular_file_is_not_replaced(tmp_path):
    path = tmp_path / "c.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="not a socket"):
        await ControlServer(path).run()
    assert path.read_text() == "precious"


async def test_missing_directory(tmp_path):
    with pytest.raises(ControlError, match="cannot create control socket .*No such file"):
        await ControlServer(tmp_path / "nope" / "c.sock").run()


async def test_socket_replaced_by_someone_else_is_not_removed(tmp_path):
    path = tmp_path / "c.sock"
    srv = ControlServer(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.run)
        os.unlink(path)
        path.write_text("other")
        nursery.cancel_scope.cancel()
    assert path.read_text() == "other"


# -- credentials ----------------------------------------------------------------------------------
def test_peer_from_ucred():
    raw = struct.pack("3i", 1234, 1000, 1001)
    assert Peer.from_ucred(raw) == Peer(1234, 1000, 1001)


def test_peer_credentials_of_socketpair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_credentials(a) == Peer(os.getpid(), os.geteuid(), os.getegid())


def no_groups(pid):
    return set()


def never(uid, gid):
    return False


def test_is_authorized_root_and_daemon_user():
    kw = dict(proc_groups=no_groups, nss_member=never)
    assert is_authorized(Peer(1, 0, 0), daemon_uid=999, group_gid=None, **kw)
    assert is_authorized(Peer(1, 999, 5), daemon_uid=999, group_gid=None, **kw)


def test_is_authorized_refuses_foreign_uid():
    peer = Peer(4242, 12345, 12345)  # crafted: a foreign user, not in the group
    assert not is_authorized(peer, daemon_uid=999, group_gid=None, proc_groups=no_groups, nss_member=never)
    assert not is_authorized(peer, daemon_uid=999, group_gid=777, proc_groups=no_groups, nss_member=never)
    assert not is_authorized(peer, daemon_uid=999, group_gid=777, proc_groups=lambda pid: None,
                             nss_member=never)


def test_is_authorized_group_members():
    peer = Peer(4242, 12345, 12345)
    # primary group from SO_PEERCRED
    assert is_authorized(Peer(4242, 12345, 777), daemon_uid=999, group_gid=777,
                         proc_groups=no_groups, nss_member=never)
    # supplementary group of the live process
    assert is_authorized(peer, daemon_uid=999, group_gid=777, proc_groups=lambda pid: {5, 777},
                         nss_member=never)
    # group database (when /proc is hidden, e.g. ProtectProc=invisible)
    seen = []

    def member(uid, gid):
        seen.append((uid, gid))
        return True

    assert is_authorized(peer, daemon_uid=999, group_gid=777, proc_groups=lambda pid: None,
                         nss_member=member)
    assert seen == [(12345, 777)]


def test_is_authorized_real_lookups():
    # nobody (65534) is not in the root group on any sane system (no such pid: /proc unreadable)
    assert not is_authorized(Peer(999999999, 65534, 65534), daemon_uid=12345, group_gid=0)


async def test_privileged_command_refused_for_foreign_peer(tmp_path, monkeypatch):
    srv = ControlServer(tmp_path / "c.sock", handlers=HANDLERS)
    foreign = Peer(4242, 12345, 12345)
    monkeypatch.setattr("modemd.control._proc_groups", no_groups)
    monkeypatch.setattr("modemd.control._nss_member", never)
    srv.group_gid = 777
    ans = await srv.dispatch(b'{"v": 1, "id": 3, "cmd": "reboot"}', foreign)
    assert ans["ok"] is False and ans["id"] == 3
    assert ans["error"].startswith("permission denied: 'reboot' needs root")
    # unprivileged commands are allowed for anyone who can connect
    assert (await srv.dispatch(b'{"v": 1, "id": 4, "cmd": "status"}', foreign))["ok"] is True
    # unknown commands are reported as unknown, not as privileged
    assert "unknown command" in (await srv.dispatch(b'{"v": 1, "cmd": "x"}', foreign))["error"]


def test_default_privileged_set():
    assert PRIVILEGED == {"at", "reboot", "reload", "reconnect"}


def test_resolve_group():
    assert resolve_group(None) is None and resolve_group("") is None
    assert resolve_group(5) == 5 and resolve_group("5") == 5
    with pytest.raises(ControlError):
        resolve_group("no-such-group-xyz")
