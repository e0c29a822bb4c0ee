"""Tests of modemd.systemd (sd_notify, watchdog) and of systemd/modemd.service."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

import pytest
import trio

from modemd import systemd as sd

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "modemd.service"
TEMPLATE = UNIT.parent / "modemd@.service"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sd, "_failure_logged", False)


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path, monkeypatch):
    """A fake systemd notify socket: a bound AF_UNIX SOCK_DGRAM socket; NOTIFY_SOCKET points at it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        addr = str(tmp_path / "notify")
        sock.bind(addr)
        monkeypatch.setenv("NOTIFY_SOCKET", addr)
    else:
        name = f"modemd-test-{uuid.uuid4().hex}"
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    sock.setblocking(False)
    yield sock
    sock.close()


def received(sock) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notify_unset_returns_false():
    assert sd.notify("READY=1") is False
    assert sd.ready("x") is False
    assert sd.status("x") is False
    assert sd.stopping() is False


def test_notify_messages(listener):
    assert sd.notify("FOO=1") is True
    assert sd.ready() is True
    assert sd.ready("modem registered\non lte") is True
    assert sd.status("  waiting   for SIM ") is True
    assert sd.reloading("reloading config") is True
    assert sd.stopping() is True
    assert sd.watchdog_ping() is True
    assert received(listener) == [
        "FOO=1",
        "READY=1",
        "READY=1\nSTATUS=modem registered on lte",
        "STATUS=waiting for SIM",
        "RELOADING=1\nSTATUS=reloading config",
        "STOPPING=1",
        "WATCHDOG=1",
    ]


def test_notify_failure_is_false_and_logged_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, logger="modemd.systemd"):
        assert sd.notify("READY=1") is False
        assert sd.notify("WATCHDOG=1") is False
    assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1


def test_notify_unsupported_address(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert sd.notify("READY=1") is False


@pytest.mark.parametrize(
    "usec, pid, expected",
    [
        (None, None, None),
        ("30000000", None, 30.0),
        ("2000000", "self", 2.0),
        ("2000000", "other", None),
        ("0", None, None),
        ("junk", None, None),
        ("2000000", "junk", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    elif pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert sd.watchdog_interval() == expected


async def test_watchdog_task_disabled_returns():
    with trio.fail_after(1):
        await sd.watchdog_task(lambda: True)


async def test_watchdog_task_pings_only_while_healthy(monkeypatch, autojump_clock, caplog):
    pings: list[float] = []
    monkeypatch.setattr(sd, "notify", lambda state: pings.append(trio.current_time()) or True)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    health = {"ok": True}
    t0 = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sd.watchdog_task, lambda: health["ok"])
        await trio.sleep(31)  # pings at 0, 15, 30
        health["ok"] = False
        await trio.sleep(60)  # checks at 45, 60, 75, 90: no ping
        health["ok"] = True
        await trio.sleep(20)  # ping at 105
        nursery.cancel_scope.cancel()

    assert [p - t0 for p in pings] == [0.0, 15.0, 30.0, 105.0]
    msgs = [r.getMessage() for r in caplog.records if r.name == "modemd.systemd"]
    assert sum("stopping systemd watchdog pings" in m for m in msgs) == 1
    assert sum("resuming" in m for m in msgs) == 1


async def test_watchdog_task_health_check_raising(listener, autojump_clock, caplog):
    calls = 0

    def broken():
        nonlocal calls
        calls += 1
        raise RuntimeError("AT channel gone")

    with trio.move_on_after(9.5):
        await sd.watchdog_task(broken, interval=2.0)
    assert calls == 10  # at 0, 1, ... 9 s
    assert received(listener) == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "AT channel gone" in errors[0].getMessage()


async def test_watchdog_task_real_socket(listener, autojump_clock):
    with trio.move_on_after(4.4):
        await sd.watchdog_task(lambda: True, interval=3.0)
    assert received(listener) == ["WATCHDOG=1"] * 3  # at 0, 1.5 and 3.0 s


# --------------------------------------------------------------------------- the unit file


def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an existing binary (verify checks it exists)."""
    text = UNIT.read_text()
    text = re.sub(r"^ExecStart=/usr/bin/modemd ", "ExecStart=/bin/true ", text, flags=re.M)
    assert "ExecStart=/bin/true --config /etc/modemd/modemd.toml" in text
    out = tmp_path / "modemd.service"
    out.write_text(text)
    return out


def unit_settings(unit: Path = UNIT) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_contents():
    s = unit_settings()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/usr/bin/modemd --config /etc/modemd/modemd.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["WatchdogSec"] == ["30"] and s["Restart"] == ["on-failure"]
    assert s["User"] == ["modemd"] and s["Group"] == ["modemd"]
    # a missing supplementary group fails the unit with 216/GROUP: only groups every distro has
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["DevicePolicy"] == ["closed"]
    allowed = set(s["DeviceAllow"])
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyS rw", "char-gpiochip rw"} <= allowed
    # the UARTs of common gateway boards (Raspberry Pi, i.MX, TI, STM32MP, NXP LPUART) and the
    # udev rule's symlink
    assert {"char-ttyAMA rw", "char-ttymxc rw", "char-ttyO rw", "char-ttySTM rw", "char-ttyLP rw",
            "/dev/modemd-at rw"} <= allowed
    assert s["CapabilityBoundingSet"] == [""] and s["AmbientCapabilities"] == [""]
    assert s["RuntimeDirectory"] == ["modemd"] and s["RuntimeDirectoryMode"] == ["0750"]
    assert s["StateDirectory"] == ["modemd"] and s["StateDirectoryMode"] == ["0700"]  # SIM PINs


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_verify(tmp_path):
    unit = unit_copy(tmp_path)
    proc = run("systemd-analyze", "verify", str(unit))
    # verify exits 0 on parse errors ("Failed to parse ..., ignoring"): any output is a failure
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", (
        proc.stdout + proc.stderr
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_verify_catches_typos(tmp_path):
    """The check above really fails on a typo (guards against a silently-passing test)."""
    unit = unit_copy(tmp_path)
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notfy"))
    proc = run("systemd-analyze", "verify", str(unit))
    assert "notfy" in proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_security_exposure(tmp_path):
    unit = unit_copy(tmp_path)
    proc = run("systemd-analyze", "security", "--offline=true", "--no-pager", str(unit))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    score = float(match.group(1))
    print(f"systemd-analyze security exposure: {score}")
    assert score < 2.5, proc.stdout
    # the header documents the figure; other systemd versions may weigh settings differently
    documented = re.search(r"exposure level: (\d+\.\d+)", UNIT.read_text())
    assert documented, "put the exposure score in the unit's header comment"
    print(f"documented in the unit header: {documented.group(1)}")
    readme = (UNIT.parent.parent / "README.md").read_text()
    assert f"rates its exposure {documented.group(1)}" in readme, "the README quotes the same score"


def test_template_is_the_unit_but_for_its_instance_lines():
    """modemd@.service must not drift from modemd.service: the same settings, line for line,
    except the description, ExecStart (--instance %i) and the runtime and state directories."""
    plain, template = unit_settings(UNIT), unit_settings(TEMPLATE)
    assert template.pop("ExecStart") == ["/usr/bin/modemd --instance %i"]
    assert template.pop("RuntimeDirectory") == ["modemd/%i"]
    assert template.pop("StateDirectory") == ["modemd/%i"]
    assert template.pop("Description") == [plain["Description"][0] + " (%i)"]
    for key in ("ExecStart", "RuntimeDirectory", "StateDirectory", "Description"):
        plain.pop(key)
    assert template == plain


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_template_verify(tmp_path):
    text = TEMPLATE.read_text().replace("ExecStart=/usr/bin/modemd ", "ExecStart=/bin/true ")
    unit = tmp_path / "modemd@modem1.service"
    unit.write_text(text)
    proc = run("systemd-analyze", "verify", str(unit))
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", (
        proc.stdout + proc.stderr
    )


# The unit under a real systemd (Type=notify READY/STATUS, the watchdog killing a frozen daemon and
# Restart= bringing it back, journal fields) is tested in a booted systemd-nspawn container by
# tests/test_packaging.py (marker `nspawn`), which installs the .deb and this unit.
