"""modemctl end to end: a ControlServer with fake handlers, modemctl as a real subprocess."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import trio

from modemd import modemctl
from modemd.control import ControlError, ControlServer
from tests.conftest import source_readable_by_others

ROOT = Path(__file__).resolve().parent.parent

STATUS = {
    "state": "serving",
    "version": "0.1.0",
    "model": "BG96",
    "firmware": "BG96MAR02A07M1G",
    "imei": "866425030000000",
    "operator": "Telekom.de",
    "technology": "LTE Cat M1",
    "registration": {"eps": "registered (home)"},
    "signal": {"rssi_dbm": -71, "csq": 21, "rsrp_dbm": -95, "rsrq_db": -10.5, "sinr_db": 12},
    "pdp": {"context_id": 1, "up": True, "address": "10.64.1.2", "apn": "internet"},
    "uptime_seconds": 93784,
    "connections": {"active": 2, "queued": 0, "connect_ids_in_use": 2, "connect_ids_available": 10},
    "reboots": 1,
    "next_reboot": None,
    "battery": "n/a",
}
CONNECTIONS = [
    {"connect_id": 0, "forward": "mqtt", "local_peer": "127.0.0.1:50412",
     "remote": "broker.example.com:8883", "bytes_in": 2048, "bytes_out": 123, "age_seconds": 3700,
     "state": "open"},
    {"connect_id": 11, "forward": "api", "local_peer": "unix", "remote": "api.example.com:443",
     "bytes_in": 5_000_000, "bytes_out": 0, "age_seconds": 5, "state": "draining"},
]


def make_handlers(calls: list):
    async def status(args, peer):
        calls.append(("status", args))
        return STATUS

    async def connections(args, peer):
        calls.append(("connections", args))
        return CONNECTIONS

    async def ping(args, peer):
        calls.append(("ping", args))
        return {"host": args["host"],
                "replies": [{"address": "93.184.216.34", "bytes": 32, "time_ms": 120, "ttl": 55}],
                "summary": {"sent": 1, "received": 1, "lost": 0, "min_ms": 120, "max_ms": 120,
                            "avg_ms": 120}}

    async def resolve(args, peer):
        calls.append(("resolve", args))
        return {"host": args["host"], "addresses": ["93.184.216.34", "2606:2800:220:1::1"]}

    async def at(args, peer):
        calls.append(("at", args))
        if args["command"] == "AT+FAIL":
            raise ControlError("AT+FAIL: +CME ERROR: 100")
        finals = {"AT+ERR": "ERROR", "AT+CME": "+CME ERROR: 10", "AT+CMS": "+CMS ERROR: 604"}
        if args["command"] in finals:
            return {"lines": [], "final": finals[args["command"]]}
        return {"lines": ["+CSQ: 21,99"], "final": "OK"}

    async def simple(name):
        async def handler(args, peer):
            calls.append((name, args))
            return None if name == "reload" else {"message": f"{name} started"}
        return handler

    return status, connections, ping, resolve, at, simple


@pytest.fixture
async def control(tmp_path, nursery):
    calls: list = []
    status, connections, ping, resolve, at, simple = make_handlers(calls)
    handlers = {"status": status, "connections": connections, "ping": ping, "resolve": resolve,
                "at": at, "reboot": await simple("reboot"), "reconnect": await simple("reconnect"),
                "reload": await simple("reload")}
    srv = ControlServer(tmp_path / "control.sock", handlers=handlers)
    await nursery.start(srv.run)
    srv.calls = calls  # type: ignore[attr-defined]
    return srv


async def run_ctl(*argv: str, env: dict | None = None, python: str = sys.executable, **kw):
    full_env = {k: v for k, v in os.environ.items() if k != "MODEMD_CONTROL"}
    full_env.update({"PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    return await trio.run_process(
        [python, "-m", "modemd.modemctl", *argv], capture_stdout=True, capture_stderr=True,
        check=False, env=full_env, cwd=str(ROOT), **kw,
    )


def out(res) -> str:
    return res.stdout.decode()


def err(res) -> str:
    return res.stderr.decode()


def assert_one_line_error(res, text: str) -> None:
    assert res.returncode == 1, (res.returncode, err(res))
    assert out(res) == ""
    lines = err(res).splitlines()
    assert len(lines) == 1, err(res)
    assert lines[0].startswith("modemctl: ") and text in lines[0], lines[0]
    assert "Traceback" not in err(res)


async def test_status(control):
    res = await run_ctl("--socket", control.path, "status")
    assert res.returncode == 0, err(res)
    text = out(res)
    assert "State:" in text and "serving" in text
    assert "BG96 BG96MAR02A07M1G (IMEI 866425030000000)" in text
    assert "Telekom.de (LTE Cat M1)" in text
    assert "RSSI -71 dBm, CSQ 21, RSRP -95 dBm, RSRQ -10.5 dB, SINR 12 dB" in text
    assert "10.64.1.2 (context 1, APN internet)" in text
    assert "1d 2h 3m" in text
    assert "2 active, 10 connect_ids free" in text
    assert "Battery:" in text  # unknown keys are shown, not dropped
    assert err(res) == ""
    assert control.calls == [("status", {})]


async def test_status_json(control):
    res = await run_ctl("--socket", control.path, "--json", "status")
    assert res.returncode == 0
    assert json.loads(out(res)) == STATUS


@pytest.mark.parametrize("where", ["before", "after"])
async def test_json_flag_before_or_after_the_command(control, where):
    argv = ["--json", "status"] if where == "before" else ["status", "--json"]
    res = await run_ctl("--socket", control.path, *argv)
    assert res.returncode == 0, err(res)
    assert json.loads(out(res))["state"] == "serving"


def test_json_flag_after_any_command_parses():
    parser = modemctl.build_parser()
    for argv in (["connections", "--json"], ["at", "AT+CSQ", "--json"], ["ping", "h", "--json"]):
        assert parser.parse_args(argv).json is True
    assert parser.parse_args(["connections"]).json is False


@pytest.mark.parametrize("command, final", [
    ("AT+ERR", "ERROR"), ("AT+CME", "+CME ERROR: 10"), ("AT+CMS", "+CMS ERROR: 604"),
])
async def test_at_exits_nonzero_when_the_module_answers_an_error(control, command, final):
    res = await run_ctl("--socket", control.path, "at", command)
    assert res.returncode == 1, err(res)
    assert out(res).splitlines() == [final]  # the module's answer is still shown
    res = await run_ctl("--socket", control.path, "--json", "at", command)
    assert res.returncode == 1 and json.loads(out(res))["final"] == final


async def test_connections_table(control):
    res = await run_ctl("--socket", control.path, "connections")
    assert res.returncode == 0, err(res)
    lines = out(res).splitlines()
    assert lines[0].split() == ["ID", "FORWARD", "LOCAL", "PEER", "REMOTE", "IN", "OUT", "AGE", "STATE"]
    assert lines[1].split()[:4] == ["0", "mqtt", "127.0.0.1:50412", "broker.example.com:8883"]
    assert "2.0 KiB" in lines[1] and "123 B" in lines[1] and "1h 1m" in lines[1]
    assert "4.8 MiB" in lines[2] and "draining" in lines[2]
    # columns line up
    assert lines[1].index("mqtt") == lines[0].index("FORWARD") == lines[2].index("api")


async def test_commands_send_their_arguments(control):
    res = await run_ctl("--socket", control.path, "ping", "example.com", "-c", "3")
    assert res.returncode == 0, err(res)
    assert "reply from 93.184.216.34: bytes=32 time=120 ms ttl=55" in out(res)
    assert "1 sent, 1 received, 0 lost" in out(res)
    res = await run_ctl("--socket", control.path, "resolve", "example.com")
    assert out(res).splitlines() == ["93.184.216.34", "2606:2800:220:1::1"]
    res = await run_ctl("--socket", control.path, "at", "AT+CSQ")
    assert out(res).splitlines() == ["+CSQ: 21,99", "OK"]
    res = await run_ctl("--socket", control.path, "reboot", "--force")
    assert out(res).strip() == "reboot started"
    res = await run_ctl("--socket", control.path, "reconnect")
    assert out(res).strip() == "reconnect started"
    res = await run_ctl("--socket", control.path, "reload")
    assert res.returncode == 0 and out(res).strip() == "ok"
    res = await run_ctl("--socket", control.path, "reboot")
    res = await run_ctl("--socket", control.path, "ping", "--context", "2", "example.com")
    assert res.returncode == 0, err(res)
    res = await run_ctl("--socket", control.path, "resolve", "example.com", "--context", "3")
    assert res.returncode == 0, err(res)
    assert control.calls == [
        ("ping", {"host": "example.com", "count": 3}),
        ("resolve", {"host": "example.com"}),
        ("at", {"command": "AT+CSQ"}),
        ("reboot", {"force": True}),
        ("reconnect", {}),
        ("reload", {}),
        ("reboot", {"force": False}),
        ("ping", {"host": "example.com", "context_id": 2}),
        ("resolve", {"host": "example.com", "context_id": 3}),
    ]


async def test_version_builtin(control):
    res = await run_ctl("--socket", control.path, "version")
    assert res.returncode == 0 and "protocol: 1" in out(res)


async def test_daemon_error_is_one_line(control):
    res = await run_ctl("--socket", control.path, "at", "AT+FAIL")
    assert_one_line_error(res, "AT+FAIL: +CME ERROR: 100")


async def test_env_overrides_default_socket(control):
    res = await run_ctl("status", env={"MODEMD_CONTROL": str(control.path)})
    assert res.returncode == 0, err(res)


async def test_not_running_socket_missing(tmp_path):
    res = await run_ctl("--socket", str(tmp_path / "none.sock"), "status")
    assert_one_line_error(res, f"modemd is not running (no control socket at {tmp_path / 'none.sock'})")


async def test_not_running_default_path(tmp_path):
    res = await run_ctl("status", env={"MODEMD_CONTROL": ""})
    if Path(modemctl.DEFAULT_SOCKET).exists():
        pytest.skip("a modemd is running here")
    assert_one_line_error(res, "/run/modemd/control.sock")


async def test_not_running_stale_socket(tmp_path):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    res = await run_ctl("--socket", str(path), "status")
    assert_one_line_error(res, "modemd is not running (nothing listens on")


async def test_not_a_socket(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    res = await run_ctl("--socket", str(path), "status")
    assert_one_line_error(res, "modemd is not running")


async def test_no_answer_timeout(tmp_path):
    path = tmp_path / "mute.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    try:
        res = await run_ctl("--socket", str(path), "--timeout", "0.5", "status")
    finally:
        listener.close()
    assert_one_line_error(res, "no answer from modemd within 0.5 s")


async def test_garbage_answer(tmp_path, nursery):
    path = tmp_path / "garbage.sock"
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.listen(1)

    async def serve():
        conn, _ = await listener.accept()
        with conn:
            await conn.recv(1000)
            await conn.send(b"HTTP/1.0 400 nope\n")

    nursery.start_soon(serve)
    res = await run_ctl("--socket", str(path), "status")
    listener.close()
    assert_one_line_error(res, "invalid answer from modemd")


async def test_usage_errors(tmp_path):
    res = await run_ctl("frobnicate")
    assert res.returncode == 2 and "Traceback" not in err(res) and "invalid choice" in err(res)
    res = await run_ctl("--socket", str(tmp_path / "x"), "at", "AT\r\nAT+QPOWD")
    assert res.returncode == 2 and "one line" in err(res)
    res = await run_ctl()
    assert res.returncode == 2
    res = await run_ctl("--socket", str(tmp_path / "x"), "ntp", "--port", "0")
    assert res.returncode == 2 and err(res).endswith("--port must be from 1 to 65535\n")


def test_ntp_arguments():
    """`modemctl ntp`: the server is optional (the daemon's default), --port and --context pass."""
    parse = modemctl.build_parser().parse_args
    assert modemctl.command_args(parse(["ntp"])) == {}
    assert modemctl.command_args(parse(["ntp", "time.example", "--port", "1123", "--context",
                                        "2"])) == {"host": "time.example", "port": 1123,
                                                   "context_id": 2}
    assert modemctl.TIMEOUTS["ntp"] > 125  # AT+QNTP's answer may take 125 s (S5 §2.3.12)


# -- permissions: modemctl run as another user ------------------------------------------------------
SYSTEM_PYTHON = "/usr/bin/python3"
as_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SYSTEM_PYTHON).exists() or not source_readable_by_others(),
    reason="needs root (to run modemctl as nobody), /usr/bin/python3 and a checkout nobody can read",
)


def nobody_kw() -> dict:
    return {"user": 65534, "group": 65534, "extra_groups": []}


@pytest.fixture
def public_dir():
    """A directory user nobody can traverse (pytest's tmp_path is 0700 root)."""
    import tempfile

    d = tempfile.mkdtemp(prefix="modemctl-test-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@as_nobody
async def test_permission_denied_on_socket(public_dir, nursery):
    srv = ControlServer(public_dir / "c.sock", mode=0o600, handlers={})
    await nursery.start(srv.run)
    res = await run_ctl("--socket", str(srv.path), "status", python=SYSTEM_PYTHON, **nobody_kw())
    assert_one_line_error(res, f"permission denied on {srv.path}")


@as_nobody
async def test_privileged_command_refused_by_peer_credentials(public_dir, nursery):
    """nobody can connect (mode 0666) and read status, but SO_PEERCRED keeps it from rebooting."""
    calls: list = []

    async def status(args, peer):
        calls.append(("status", peer.uid))
        return {"state": "serving"}

    async def reboot(args, peer):
        calls.append(("reboot", peer.uid))
        return None

    srv = ControlServer(public_dir / "c.sock", mode=0o666, group=0,
                        handlers={"status": status, "reboot": reboot})
    await nursery.start(srv.run)
    res = await run_ctl("--socket", str(srv.path), "status", python=SYSTEM_PYTHON, **nobody_kw())
    assert res.returncode == 0, err(res)
    res = await run_ctl("--socket", str(srv.path), "reboot", python=SYSTEM_PYTHON, **nobody_kw())
    assert_one_line_error(res, "permission denied: 'reboot' needs root")
    assert calls == [("status", 65534)]
    res = await run_ctl("--socket", str(srv.path), "reboot")  # root may
    assert res.returncode == 0 and calls[-1] == ("reboot", 0)


# -- formatting, in-process ----------------------------------------------------------------------------
def test_formatters_tolerate_missing_fields():
    assert "State:" in modemctl.format_status({})
    assert modemctl.format_status("weird") == "weird"
    assert modemctl.format_connections([]) == "no connections"
    assert modemctl.format_connections({"connections": []}) == "no connections"
    assert "ID" in modemctl.format_connections([{}])
    assert modemctl.format_generic(None) == "ok"
    assert modemctl.format_generic({"a": 1, "bb": [1]}) == "a:  1\nbb: [1]"
    assert modemctl.format_at({"lines": [], "final": "OK"}) == "OK"
    assert modemctl.format_resolve({"addresses": []}) == "no addresses"
    assert modemctl.format_ntp({"utc": "2026-07-02T14:27:52Z", "unix": 1}) == "2026-07-02T14:27:52Z"
    assert modemctl.format_ntp({"server": "x"}) == "server: x"
    assert modemctl.format_ping({"host": "x"}) == "host: x"
    text = modemctl.format_status({"pdp": {"up": False, "context_id": 1}, "next_reboot": time.time() + 600})
    assert "IP:" in text and "down (context 1)" in text and "Next reboot" in text


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (65, "1m 5s"), (3700, "1h 1m"), (90000, "1d 1h 0m"),
                                          (None, "-"), (-1, "-"), (float("nan"), "-")])
def test_human_duration(seconds, text):
    assert modemctl.human_duration(seconds) == text


def test_main_in_process_error(tmp_path):
    stdout, stderr = io.StringIO(), io.StringIO()
    rc = modemctl.main(["--socket", str(tmp_path / "x.sock"), "status"], stdout=stdout, stderr=stderr)
    assert rc == 1 and stdout.getvalue() == ""
    assert stderr.getvalue().startswith("modemctl: modemd is not running")


def test_instance_selects_its_control_socket(monkeypatch):
    monkeypatch.setenv("MODEMD_CONTROL", "/tmp/env.sock")
    assert modemctl.socket_path(None, "modem2") == "/run/modemd/modem2/control.sock"
    assert modemctl.socket_path("/x.sock", "modem2") == "/x.sock"  # --socket wins
    assert modemctl.socket_path(None) == "/tmp/env.sock"


async def test_instance_flag_reaches_that_instance_and_checks_the_name(tmp_path, monkeypatch):
    import io

    stderr = io.StringIO()
    assert modemctl.main(["-i", "../etc", "status"], stderr=stderr) == 2
    assert "instance name '../etc' must be" in stderr.getvalue()
    res = await run_ctl("--instance", "nope-such", "status")
    assert_one_line_error(res, "no control socket at /run/modemd/nope-such/control.sock")


def test_socket_path(monkeypatch):
    monkeypatch.delenv("MODEMD_CONTROL", raising=False)
    assert modemctl.socket_path(None) == "/run/modemd/control.sock"
    monkeypatch.setenv("MODEMD_CONTROL", "/tmp/x.sock")
    assert modemctl.socket_path(None) == "/tmp/x.sock"
    assert modemctl.socket_path("/a") == "/a"


def test_modemctl_needs_only_the_standard_library():
    """modemctl runs under any python3 (no trio, no prometheus_client): checked by import tracing."""
    import subprocess

    code = ("import sys; import modemd.modemctl; "
            "bad = [m for m in ('trio', 'prometheus_client', 'serial') if m in sys.modules]; "
            "print(bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert res.stdout.strip() == "[]"


def test_status_text_folds_registration_losses_into_the_registration_row():
    st = {"registration": {"ps": 1, "eps": 1}, "registration_losses": 2}
    text = modemctl.format_status(st)
    assert "Registration: ps 1, eps 1 (lost 2 times since start)" in text
    assert "losses:" not in text.lower()
    quiet = modemctl.format_status({"registration": {"eps": 1}, "registration_losses": 0})
    assert "Registration: eps 1\n" in quiet + "\n" and "lost" not in quiet
