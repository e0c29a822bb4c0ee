"""Reload tells the truth (issue 14 item 5): what a reload applies, how, and what it refuses.

The rules themselves are sans-IO (modemd/reload.py); the PDP re-cycle runs on the supervisor against
the emulator in virtual time; the daemon's reload (the one path of SIGHUP and `modemctl reload`) runs
the real Daemon in-process with --emulate, with real loopback connections through its forwards; the
SIGHUP path and systemd's RELOADING=1 / READY=1 run the daemon as a subprocess.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from modemd.config import load_config, parse_config
from modemd.control_handlers import status_of
from modemd.daemon import Daemon
from modemd.emulator import Emulator, EmulatorConfig
from modemd.reload import Apply, plan
from modemd.supervisor.states import State

from .ports import free_port
from .sockets_helpers import echo_handler, read_until_end, recv_exactly, tcp_server
from .supervisor_helpers import make_cfg, running, wait_state

PY = sys.executable
SECRET, NEW_SECRET = "s3cret-Reload-pw1", "n3w-Reload-pw2"


# -- the rules (sans-IO) ------------------------------------------------------------------------------
BASE = """
[modem]
port = "/dev/ttyUSB2"
baudrate = 115200
[pdp]
apn = "internet"
[[forward]]
name = "a"
listen = "tcp:127.0.0.1:7001"
remote = "example.org:80"
[[forward]]
name = "b"
listen = "tcp:127.0.0.1:7002"
remote = "example.org:81"
"""


def _plan(old: str, new: str):
    return plan(parse_config(old, emulate=True), parse_config(new, emulate=True))


def test_keys_are_named_as_written_and_grouped_by_how_they_apply():
    new = (BASE.replace('apn = "internet"', 'apn = "m2m"\nauth = "pap"\nusername = "u"\n'
                        'password = "' + SECRET + '"')
           .replace("example.org:81", "example.org:82") + "[log]\nlevel = \"debug\"\n")
    p = _plan(BASE, new)
    assert p.paths(Apply.PDP) == ["pdp.apn", "pdp.username", "pdp.password", "pdp.auth"]
    assert p.paths(Apply.PROXY) == ["forward[1].remote"]
    assert p.paths(Apply.LIVE) == ["log.level"]
    assert p.refused == []
    assert SECRET not in repr(p)  # keys only, never values


def test_restart_keys_refuse_with_one_line_each_naming_key_and_fix():
    new = BASE.replace("baudrate = 115200", "baudrate = 921600").replace(
        'apn = "internet"', 'apn = "m2m"\ncontext_id = 2') + "[supervisor]\nreboot_jitter = 0.2\n"
    p = plan(parse_config(BASE, emulate=True), parse_config(new, emulate=True),
             restart_hint="systemctl restart modemd@lte")
    assert p.paths(Apply.PDP) == ["pdp.apn"]
    assert sorted(p.refused) == sorted([
        "modem.baudrate cannot change while running: restart modemd (systemctl restart modemd@lte)",
        "pdp.context_id cannot change while running (forwards, listens and SOCKS5 are bound to "
        "the context at start): restart modemd (systemctl restart modemd@lte)",
        "supervisor.reboot_jitter cannot change while running (the supervisor takes these at "
        "start): restart modemd (systemctl restart modemd@lte)",
    ])


def test_array_entries_match_by_name_and_tables_that_appear_are_one_key():
    a, b = BASE.split("[[forward]]")[1:]
    moved = BASE.split("[[forward]]")[0] + "[[forward]]" + b + "[[forward]]" + a
    assert _plan(BASE, moved).changes == []  # order in the file is not a change
    added = BASE.replace('name = "b"', 'name = "c"') + '[socks]\nlisten = "tcp:127.0.0.1:1080"\n'
    p = _plan(BASE, added)
    assert {c.path for c in p.changes} == {"forward[1]", "socks"}  # c added, b removed: both [1]
    assert set(p.paths(Apply.PROXY)) == {"forward[1]", "socks"}
    assert p.refused == []


def test_a_password_read_from_a_file_is_named_by_its_file_key(tmp_path):
    (tmp_path / "pw").write_text(SECRET + "\n")
    cfg = tmp_path / "m.toml"
    cfg.write_text(BASE.replace('apn = "internet"', 'apn = "internet"\nusername = "u"\n'
                                'password_file = "pw"\nauth = "pap"'))
    old = load_config(cfg, emulate=True)
    (tmp_path / "pw").write_text(NEW_SECRET + "\n")
    p = plan(old, load_config(cfg, emulate=True))
    assert [c.path for c in p.changes] == ["pdp.password_file"] and p.refused == []
    assert p.paths(Apply.PDP) == ["pdp.password_file"]


# -- the PDP re-cycle on the supervisor (emulator, virtual time) -------------------------------------
def emulator(**kw):
    kw.setdefault("boot_delay", 0.5)
    kw.setdefault("qiact_delay", 1.0)
    return Emulator.open(EmulatorConfig(family="bg96", **kw))


async def test_credentials_auth_and_ip_type_recycle_the_context(mock_clock, caplog):
    caplog.set_level(logging.DEBUG)
    async with emulator() as emu:
        cfg = make_cfg(emu.tty_path)
        async with running(cfg, connections=lambda: 2) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            mark = len(emu.commands)
            lost = link.lost(1)
            new = dataclasses.replace(cfg.pdp[0], username="other-user", password=NEW_SECRET,
                                      auth="chap", ip_type="ipv4v6")
            sup.apply_pdp(new)
            assert sup.pdp.effective.auth == "pap"  # not in effect before the context re-cycles
            assert sup.pdp.pending == ("pdp.username", "pdp.password", "pdp.auth", "pdp.ip_type")
            with trio.fail_after(60):
                await lost.wait()
                await wait_state(sup, State.ACTIVATING)
                await wait_state(sup, State.SERVING)
            assert emu.commands[mark:] == [
                "AT+QIDEACT=1", f'AT+QICSGP=1,3,"internet","other-user","{NEW_SECRET}",2',
                "AT+QIACT?", "AT+QIACT=1", "AT+QIACT?",
            ]
            info = emu.context_info(1)
            assert info["active"] and (info["username"], info["auth"]) == ("other-user", 2)
            eff = sup.pdp.effective
            assert (eff.apn, eff.auth, eff.ip_type) == ("internet", "chap", "ipv4v6")
            assert sup.pdp.pending == ()
            assert sup.schedule.total == 0
    assert ("cycling context 1: reload: pdp.username, pdp.password, pdp.auth, pdp.ip_type "
            "changed; 2 connections on it reset") in caplog.text
    assert NEW_SECRET not in caplog.text and "s3cret-pw" not in caplog.text


async def test_settings_the_module_refuses_are_not_put_in_effect(mock_clock, caplog):
    """AT+QICSGP answers ERROR (IPv6 on an IPv4-only module): the context comes back with the
    previous settings, status keeps showing them, and nothing loops."""
    async with Emulator.open(EmulatorConfig(family="generic", boot_delay=0.5,
                                            qiact_delay=1.0)) as emu:
        cfg = make_cfg(emu.tty_path, model="generic")
        async with running(cfg) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            sup.apply_pdp(dataclasses.replace(cfg.pdp[0], apn="v6.example", ip_type="ipv6"))
            with trio.fail_after(60):
                await wait_state(sup, State.DEACTIVATING)
                await wait_state(sup, State.SERVING)
            await trio.sleep(3 * sup.timings.pdp_check_interval)  # no re-cycle loop
            assert dict(sup.pdp.cycles) == {"reload": 1} and link.serving(1)
            assert (sup.pdp.effective.apn, sup.pdp.effective.ip_type) == ("internet", "ipv4")
            assert sup.pdp.pending == ()
            assert emu.context_info(1)["apn"] == "internet"
    assert "the reloaded [pdp] settings are not in effect: context 1 keeps the previous ones" \
        in caplog.text


async def test_new_settings_during_bring_up_are_used_once_serving(mock_clock):
    """A reload while the context is being activated with the old APN: once serving, the
    context is re-cycled with the new one (no reload is ever lost)."""
    async with emulator(qiact_delay=20.0) as emu:
        cfg = make_cfg(emu.tty_path)
        async with running(cfg) as (sup, link):
            await wait_state(sup, State.ACTIVATING)
            assert any(c.startswith('AT+QICSGP=1,1,"internet"') for c in emu.commands)
            sup.apply_pdp(dataclasses.replace(cfg.pdp[0], apn="m2m.example"))
            with trio.fail_after(300):
                while sup.pdp.pending or not link.serving(1):
                    await trio.sleep(1)
            assert emu.context_info(1)["apn"] == "m2m.example"
            assert sup.pdp.effective.apn == "m2m.example"
            assert emu.commands.count("AT+QIDEACT=1") == 1


async def test_reconnect_writes_qicsgp_with_the_settings_in_effect(mock_clock):
    async with emulator() as emu:
        cfg = make_cfg(emu.tty_path)
        async with running(cfg) as (sup, link):
            with trio.fail_after(300):
                await link.wait_serving(1)
            mark = len(emu.commands)
            sup.reconnect("modemctl reconnect")
            with trio.fail_after(60):
                await wait_state(sup, State.DEACTIVATING)
                await wait_state(sup, State.SERVING)
            assert emu.commands[mark:] == [
                "AT+QIDEACT=1", 'AT+QICSGP=1,1,"internet","user","s3cret-pw",1',
                "AT+QIACT?", "AT+QIACT=1", "AT+QIACT?",
            ]
            assert sup.pdp.cycles["modemctl reconnect"] == 1


# -- the daemon's reload, in-process (real loopback connections) -------------------------------------
def write_config(tmp: Path, ports: dict[str, int], *, apn: str = "internet", baudrate: int = 115200,
                 other_remote: int | None = None, extra: str = "") -> Path:
    path = tmp / "modemd.toml"
    path.write_text(f"""
[modem]
model = "bg96"
lock_dir = "{tmp}"
baudrate = {baudrate}
[pdp]
apn = "{apn}"
username = "gw-user"
password_file = "pdp.pw"
auth = "chap"
[proxy]
linger_seconds = 0.5
[[forward]]
name = "echo"
listen = "tcp:127.0.0.1:{ports['echo']}"
remote = "127.0.0.1:{ports['server']}"
[[forward]]
name = "other"
listen = "tcp:127.0.0.1:{ports['other']}"
remote = "127.0.0.1:{other_remote or ports['server']}"
[metrics]
listen = ""
[control]
socket = "{tmp}/control.sock"
{extra}""")
    return path


@asynccontextmanager
async def daemon_running(tmp: Path):
    async with tcp_server(echo_handler) as server:
        ports = {"echo": free_port(), "other": free_port(), "server": server.port}
        (tmp / "pdp.pw").write_text(SECRET + "\n")
        path = write_config(tmp, ports)
        args = argparse.Namespace(emulate=True, emulate_profile="bg96", emulate_baud=0,
                                  config=str(path), log_level=None)
        daemon = Daemon(load_config(path, emulate=True), args)
        daemon.ports = ports
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.run)
            with trio.fail_after(30):
                while not (hasattr(daemon, "supervisor") and daemon.link.serving(1)):
                    await trio.sleep(0.01)
            yield daemon
            nursery.cancel_scope.cancel()


async def echo_once(port: int, data: bytes = b"ping") -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(data)
    with trio.fail_after(30):
        assert await recv_exactly(stream, len(data)) == data
    return stream


async def modemctl(daemon, *args: str) -> subprocess.CompletedProcess:
    return await trio.run_process(
        [PY, "-m", "modemd.modemctl", "--socket", daemon.cfg.control.socket, *args],
        capture_stdout=True, capture_stderr=True, check=False,
    )


async def test_apn_change_recycles_the_context_and_resets_only_its_connections(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    async with daemon_running(tmp_path) as daemon:
        emu, sup = daemon.emulator, daemon.supervisor
        conn = await echo_once(daemon.ports["echo"])
        emu.set_qiact_delay(1.0)  # long enough to see the settings pending
        mark = len(emu.commands)
        write_config(tmp_path, daemon.ports, apn="m2m.example")
        assert await daemon.reload() == []
        status = await status_of(daemon)
        assert status["pdp"]["apn"] == "internet" and status["pdp"]["pending"] == ["pdp.apn"]
        got, how = await read_until_end(conn, timeout=30)
        assert how == "reset"  # the context went down under it: never a clean EOF
        await conn.aclose()
        with trio.fail_after(30):
            while sup.pdp.pending or not daemon.link.serving(1):
                await trio.sleep(0.05)
        status = await status_of(daemon)
        assert status["pdp"]["apn"] == "m2m.example" and "pending" not in status["pdp"]
        assert (status["pdp"]["auth"], status["pdp"]["ip_type"]) == ("chap", "ipv4")
        after = emu.commands[mark:]
        qicsgp = next(c for c in after if c.startswith("AT+QICSGP="))
        assert qicsgp.startswith('AT+QICSGP=1,1,"m2m.example","gw-user",')
        assert after.index("AT+QIDEACT=1") < after.index(qicsgp) < after.index("AT+QIACT=1")
        assert emu.context_info(1)["apn"] == "m2m.example" and emu.context_info(1)["active"]
        await (await echo_once(daemon.ports["echo"], b"after")).aclose()  # serves with the new APN
    assert "reload: applying pdp.apn" in caplog.text
    assert "cycling context 1: reload: pdp.apn changed; 1 connection on it reset" in caplog.text


async def test_a_restart_key_refuses_the_whole_reload_and_nothing_is_applied(tmp_path, caplog):
    async with daemon_running(tmp_path) as daemon:
        emu = daemon.emulator
        mark = len(emu.commands)
        write_config(tmp_path, daemon.ports, apn="m2m.example", baudrate=921600)
        res = await modemctl(daemon, "reload")
        line = ("modem.baudrate cannot change while running: restart modemd "
                "(systemctl restart modemd) (nothing applied)")
        assert res.returncode == 1 and res.stderr.decode().strip() == f"modemctl: {line}"
        assert f"reload failed: {line}" in caplog.text  # the journal gets the same line
        status = json.loads((await modemctl(daemon, "--json", "status")).stdout)
        assert status["pdp"]["apn"] == "internet" and "pending" not in status["pdp"]
        assert not any(c.startswith(("AT+QICSGP", "AT+QIDEACT")) for c in emu.commands[mark:])
        assert daemon.supervisor.pdp.wanted.apn == "internet"
        # modemctl reconnect: the context re-cycles with the settings in effect, QICSGP included
        res = await modemctl(daemon, "reconnect")
        assert res.returncode == 0, res.stderr
        with trio.fail_after(30):
            while daemon.supervisor.pdp.cycles["modemctl reconnect"] < 1 \
                    or not daemon.link.serving(1):
                await trio.sleep(0.05)
        after = emu.commands[mark:]
        assert after.index("AT+QIDEACT=1") < after.index(
            next(c for c in after if c.startswith('AT+QICSGP=1,1,"internet",'))
        ) < after.index("AT+QIACT=1")
        # the file fixed: the same APN change now applies
        write_config(tmp_path, daemon.ports, apn="m2m.example")
        res = await modemctl(daemon, "--json", "reload")
        assert res.returncode == 0 and json.loads(res.stdout)["pending"] == ["pdp.apn"]


async def test_forward_change_leaves_the_context_and_other_connections_alone(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    async with daemon_running(tmp_path) as daemon, tcp_server(echo_handler) as other_server:
        emu = daemon.emulator
        keep = await echo_once(daemon.ports["echo"])
        doomed = await echo_once(daemon.ports["other"])
        mark = len(emu.commands)
        write_config(tmp_path, daemon.ports, other_remote=other_server.port)
        (tmp_path / "pdp.pw").write_text(NEW_SECRET + "\n")  # and a new password
        assert await daemon.reload() == []
        _, how = await read_until_end(doomed, timeout=30)
        assert how == "reset"  # its forward restarted with the new remote
        await doomed.aclose()
        with trio.fail_after(30):
            while daemon.supervisor.pdp.pending or not daemon.link.serving(1):
                await trio.sleep(0.05)
        assert daemon.supervisor.pdp.cycles["reload"] == 1  # the password: one re-cycle
        keep_cycles = dict(daemon.supervisor.pdp.cycles)
        await keep.aclose()
        # a forward-only change: no PDP command, the other forward's connection keeps going
        keep = await echo_once(daemon.ports["echo"])
        mark = len(emu.commands)
        write_config(tmp_path, daemon.ports)
        assert await daemon.reload() == []
        await keep.send_all(b"still here")
        with trio.fail_after(30):
            assert await recv_exactly(keep, 10) == b"still here"
        await (await echo_once(daemon.ports["other"])).aclose()
        assert not any(c.startswith(("AT+QICSGP", "AT+QIDEACT", "AT+QIACT="))
                       for c in emu.commands[mark:])
        assert dict(daemon.supervisor.pdp.cycles) == keep_cycles
        status = json.loads((await modemctl(daemon, "--json", "status")).stdout)
        await keep.aclose()
    assert "reload: applying pdp.password_file, forward[1].remote" in caplog.text
    for text in (caplog.text, json.dumps(status)):
        assert NEW_SECRET not in text and SECRET not in text


async def test_a_listener_that_cannot_bind_fails_the_reload_and_is_tried_again(tmp_path):
    async with daemon_running(tmp_path) as daemon:
        blocker = trio.socket.socket()
        await blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        write_config(tmp_path, daemon.ports, extra=f"""
[[forward]]
name = "late"
listen = "tcp:127.0.0.1:{port}"
remote = "127.0.0.1:{daemon.ports['server']}"
""")
        errors = await daemon.reload()
        assert len(errors) == 1 and errors[0].startswith("forward late: ")
        assert f"127.0.0.1:{port}" in errors[0]
        assert daemon.proxy.units == ["forward echo", "forward other"]
        blocker.close()
        assert await daemon.reload() == []  # the same file: the listener is tried again
        assert daemon.proxy.units == ["forward echo", "forward late", "forward other"]
        await (await echo_once(port)).aclose()


async def test_a_reload_that_replaces_every_listener(tmp_path):
    """Every unit stops before the new ones start: the proxy must stay open for them."""
    async with daemon_running(tmp_path) as daemon:
        moved = {**daemon.ports, "echo": free_port(), "other": free_port()}
        write_config(tmp_path, moved)
        assert await daemon.reload() == []
        for name in ("echo", "other"):
            await (await echo_once(moved[name])).aclose()


# -- SIGHUP, as systemd sends it (subprocess daemon, real NOTIFY_SOCKET) -----------------------------
def _ctl(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "modemd.modemctl", "--socket", str(tmp / "control.sock"),
                           *args], capture_output=True, text=True, timeout=60)


def _wait_status(tmp: Path, proc, output, done, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, output()
        res = _ctl(tmp, "--json", "status")
        if res.returncode == 0 and done(status := json.loads(res.stdout)):
            return status
        time.sleep(0.1)
    raise AssertionError(f"{status}\n{output()}")


def _notifications(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_sighup_applies_the_apn_and_tells_systemd(tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    ports = {"echo": free_port(), "other": free_port(), "server": free_port()}
    (tmp_path / "pdp.pw").write_text(SECRET + "\n")
    cfg = write_config(tmp_path, ports)
    log = open(tmp_path / "daemon.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [PY, "-m", "modemd.cli", "--emulate", "--config", str(cfg)], stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
    )

    def output() -> str:
        log.flush()
        return (tmp_path / "daemon.log").read_text()

    try:
        _wait_status(tmp_path, proc, output, lambda s: s.get("state") == "serving")
        assert any(n.startswith("READY=1") for n in _notifications(notify))
        write_config(tmp_path, ports, apn="m2m.example")
        proc.send_signal(signal.SIGHUP)
        status = _wait_status(tmp_path, proc, output,
                              lambda s: s["pdp"]["apn"] == "m2m.example" and s["state"] == "serving")
        assert "pending" not in status["pdp"]
        sent = [n.split("\n")[0] for n in _notifications(notify) if n.startswith(("RELOADING", "READY"))]
        assert sent[:2] == ["RELOADING=1", "READY=1"]
        # a key that needs a restart: the journal names it, the APN in effect stays
        write_config(tmp_path, ports, apn="other.apn", baudrate=9600)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reload failed: modem.baudrate cannot change while running" not in output():
            assert time.monotonic() < deadline, output()
            time.sleep(0.1)
        status = _wait_status(tmp_path, proc, output, lambda s: True)
        assert status["pdp"]["apn"] == "m2m.example" and "pending" not in status["pdp"]
        sent = [n.split("\n")[0] for n in _notifications(notify) if n.startswith(("RELOADING", "READY"))]
        assert sent[:2] == ["RELOADING=1", "READY=1"]
        assert "cycling context 1: reload: pdp.apn changed" in output()
        assert SECRET not in output()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)
        log.close()
        notify.close()



def test_modemctl_status_text_names_the_pending_keys():
    from modemd.modemctl import format_status

    pdp = {"context_id": 1, "up": True, "address": "10.7.157.1", "apn": "internet", "auth": "none",
           "ip_type": "ipv4"}
    assert "IP:" in format_status({"state": "serving", "pdp": pdp})
    line = next(x for x in format_status({"pdp": {**pdp, "pending": ["pdp.apn"]}}).splitlines()
                if x.startswith("IP:"))
    assert line.endswith("10.7.157.1 (context 1, APN internet, reload pending: pdp.apn)")


def test_an_instance_reloads_its_own_file():
    """modemd@NAME runs with --instance NAME and no --config: SIGHUP re-reads /etc/modemd/NAME.toml
    (it used to answer "no configuration file to reload")."""
    from modemd.daemon import config_path
    from modemd.instance import config_file

    args = argparse.Namespace(emulate=False, config=None, instance="north")
    assert config_path(args) == str(config_file("north"))
    assert config_path(argparse.Namespace(emulate=True, config=None, instance=None)) is None


async def test_a_forward_a_reload_removes_leaves_no_metric_series_behind(tmp_path):
    """Operators graph modemd_* by forward: a forward taken out of the config by a reload takes
    its series out of the scrape too (before, its last values stayed until a restart), the
    others keep their counts, and one that comes back starts again at 0."""
    async with daemon_running(tmp_path) as daemon:
        await (await echo_once(daemon.ports["echo"])).aclose()
        await (await echo_once(daemon.ports["other"], b"pong!")).aclose()

        def scrape() -> list[str]:
            body, _ = daemon.metrics.generate("")
            return [line for line in body.decode().splitlines() if 'forward="' in line
                    and not line.startswith("#") and "_created" not in line]

        before = scrape()
        assert 'modemd_forward_bytes_total{direction="to_module",forward="other"} 5.0' in before
        full = (tmp_path / "modemd.toml").read_text()
        start, end = full.index('[[forward]]\nname = "other"'), full.index("[metrics]")
        (tmp_path / "modemd.toml").write_text(full[:start] + full[end:])
        assert await daemon.reload() == []
        after = scrape()
        assert after == [line for line in before if 'forward="other"' not in line]
        assert 'modemd_forward_bytes_total{direction="to_module",forward="echo"} 4.0' in after
        (tmp_path / "modemd.toml").write_text(full)
        assert await daemon.reload() == []
        again = scrape()
        assert 'modemd_forward_bytes_total{direction="to_module",forward="other"} 0.0' in again
        assert 'modemd_connections_opened_total{forward="other"} 0.0' in again
