"""Tests of modemd.supervisor.power.

There is no kernel GPIO simulation on the development machine (see the module docstring), so the
gpiod backend runs against a fake ``request_lines``/``open_chip``; the real bindings are used only
to check the API names and the "chip missing" error.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from types import SimpleNamespace

import pytest
import trio

from modemd.supervisor import power
from modemd.supervisor.power import (
    CommandPowerBackend,
    GpiodPowerBackend,
    NoPowerBackend,
    PowerBackend,
    PowerError,
    make_power_backend,
    power_cycle,
)

gpiod = pytest.importorskip("gpiod")
from gpiod.line import Direction, Value  # noqa: E402


def cfg(**kw):
    base = dict(
        backend="none",
        chip=None,
        pwrkey=None,
        pwrkey_active_low=False,
        supply=None,
        supply_active_low=False,
        off=None,
        on=None,
        pwrkey_command=None,
        pwrkey_seconds=None,
        supply_off_seconds=None,
    )
    base.update(kw)
    return SimpleNamespace(**base)


class FakeRequest:
    def __init__(self, path, config, consumer):
        self.path = path
        self.config = config
        self.consumer = consumer
        self.events: list[tuple[float, int, Value]] = []
        self.released = False

    def set_value(self, offset, value):
        assert not self.released
        assert offset in self.config
        self.events.append((trio.current_time(), offset, value))

    def release(self):
        self.released = True


class FakeChip:
    names = {"PWRKEY": 17, "MODEM_EN": 4}

    def __init__(self, path):
        self.path = path
        self.closed = False

    def line_offset_from_id(self, ident):
        if ident in self.names:
            return self.names[ident]
        try:
            return int(ident)
        except ValueError:
            raise OSError(errno.ENOENT, "No such file or directory") from None

    def close(self):
        self.closed = True


class Fakes:
    def __init__(self):
        self.requests: list[FakeRequest] = []
        self.chips: list[FakeChip] = []

    def request_lines(self, path, config, consumer=None):
        req = FakeRequest(path, config, consumer)
        self.requests.append(req)
        return req

    def open_chip(self, path):
        chip = FakeChip(path)
        self.chips.append(chip)
        return chip


@pytest.fixture
def fakes():
    return Fakes()


# ---------------------------------------------------------------- real gpiod bindings


def test_real_gpiod_api_names():
    assert callable(gpiod.request_lines)
    settings = gpiod.LineSettings(
        direction=Direction.OUTPUT, active_low=True, output_value=Value.INACTIVE
    )
    assert settings.direction is Direction.OUTPUT and settings.active_low is True
    assert hasattr(gpiod.Chip, "line_offset_from_id")
    assert hasattr(gpiod.LineRequest, "set_value") and hasattr(gpiod.LineRequest, "release")


def test_real_gpiod_missing_chip(tmp_path):
    missing = tmp_path / "gpiochip9"
    with pytest.raises(PowerError, match=r"gpio chip .*gpiochip9 not found: set power.chip"):
        make_power_backend(cfg(backend="gpiod", chip=str(missing), pwrkey=3))
    with pytest.raises(PowerError, match="not found: set power.chip"):  # names go via Chip()
        make_power_backend(cfg(backend="gpiod", chip=str(missing), pwrkey="PWRKEY"))


def test_real_gpiod_not_a_chip():
    with pytest.raises(PowerError, match="is not a gpio chip"):
        make_power_backend(cfg(backend="gpiod", chip="/dev/null", pwrkey=3))


def test_gpiod_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(PowerError, match=r"install the gpio extra: pip install 'modemd\[gpio\]'"):
        make_power_backend(cfg(backend="gpiod", pwrkey=3))


def test_gpiod_v1_api_rejected(monkeypatch):
    fake_v1 = SimpleNamespace(__version__="1.5.4", Chip=object)
    monkeypatch.setitem(sys.modules, "gpiod", fake_v1)
    monkeypatch.setitem(sys.modules, "gpiod.line", SimpleNamespace(Direction=1, Value=1))
    with pytest.raises(PowerError, match="libgpiod v1 API"):
        make_power_backend(cfg(backend="gpiod", pwrkey=3))


# ---------------------------------------------------------------- gpiod backend, faked


async def test_gpiod_request_and_pwrkey_sequence(fakes, autojump_clock):
    backend = make_power_backend(
        cfg(
            backend="gpiod",
            chip="gpiochip2",
            pwrkey="PWRKEY",
            pwrkey_active_low=True,
            supply=4,
            supply_active_low=False,
        ),
        request_lines=fakes.request_lines,
        open_chip=fakes.open_chip,
    )
    assert isinstance(backend, PowerBackend)
    assert backend.name == "gpiod" and backend.has_pwrkey and backend.has_supply
    [req] = fakes.requests
    assert req.path == "/dev/gpiochip2"
    assert req.consumer == "modemd"
    assert set(req.config) == {17, 4}
    pk, sup = req.config[17], req.config[4]
    assert pk.direction is Direction.OUTPUT and sup.direction is Direction.OUTPUT
    assert pk.active_low is True and sup.active_low is False
    assert pk.output_value is Value.INACTIVE  # key released at request time
    assert sup.output_value is Value.ACTIVE  # never cut power at start-up
    assert [c.closed for c in fakes.chips] == [True]  # name lookup chip closed again

    t0 = trio.current_time()
    await backend.pwrkey_pulse()
    assert [(t - t0, o, v) for t, o, v in req.events] == [
        (0.0, 17, Value.ACTIVE),
        (2.0, 17, Value.INACTIVE),
    ]
    req.events.clear()
    t0 = trio.current_time()
    await backend.pwrkey_pulse(0.5)
    assert [(t - t0, v) for t, _, v in req.events] == [(0.0, Value.ACTIVE), (0.5, Value.INACTIVE)]

    await backend.aclose()
    assert req.released
    await backend.aclose()  # idempotent
    with pytest.raises(PowerError, match="closed"):
        await backend.supply_off()


async def test_gpiod_power_cycle_timing(fakes, autojump_clock):
    backend = make_power_backend(
        cfg(backend="gpiod", pwrkey=5, supply=6, supply_active_low=True, supply_off_seconds=12),
        request_lines=fakes.request_lines,
        open_chip=fakes.open_chip,
    )
    assert fakes.chips == []  # offsets only: no name lookup
    [req] = fakes.requests
    assert req.path == "/dev/gpiochip0" and req.config[6].active_low is True
    t0 = trio.current_time()
    assert await power_cycle(backend) == "supply"
    assert [(t - t0, o, v) for t, o, v in req.events] == [
        (0.0, 6, Value.INACTIVE),
        (12.0, 6, Value.ACTIVE),
    ]
    req.events.clear()
    t0 = trio.current_time()
    assert await power_cycle(backend, 3.0, pwrkey_after_supply=True) == "supply"
    assert [(t - t0, o, v) for t, o, v in req.events] == [
        (0.0, 6, Value.INACTIVE),
        (3.0, 6, Value.ACTIVE),
        (3.0, 5, Value.ACTIVE),
        (5.0, 5, Value.INACTIVE),
    ]
    assert not req.released  # power_cycle releases nothing


async def test_power_cycle_pwrkey_only(fakes, autojump_clock):
    backend = make_power_backend(
        cfg(backend="gpiod", pwrkey="PWRKEY", pwrkey_seconds=1.5),
        request_lines=fakes.request_lines,
        open_chip=fakes.open_chip,
    )
    assert not backend.has_supply
    with pytest.raises(PowerError, match="no supply line"):
        await backend.supply_off()
    [req] = fakes.requests
    t0 = trio.current_time()
    assert await power_cycle(backend) == "pwrkey"
    assert [(t - t0, v) for t, _, v in req.events] == [(0.0, Value.ACTIVE), (1.5, Value.INACTIVE)]


async def test_power_cycle_cancelled_during_off_restores_supply(fakes, autojump_clock):
    backend = make_power_backend(
        cfg(backend="gpiod", supply="MODEM_EN"),
        request_lines=fakes.request_lines,
        open_chip=fakes.open_chip,
    )
    [req] = fakes.requests
    t0 = trio.current_time()
    with trio.move_on_after(5) as scope:
        await power_cycle(backend, 12.0)
    assert scope.cancelled_caught
    assert [(t - t0, o, v) for t, o, v in req.events] == [
        (0.0, 4, Value.INACTIVE),
        (5.0, 4, Value.ACTIVE),
    ]


async def test_pwrkey_released_when_cancelled(fakes, autojump_clock):
    backend = make_power_backend(
        cfg(backend="gpiod", pwrkey=1), request_lines=fakes.request_lines, open_chip=fakes.open_chip
    )
    [req] = fakes.requests
    with trio.move_on_after(0.25):
        await backend.pwrkey_pulse()
    assert [v for _, _, v in req.events] == [Value.ACTIVE, Value.INACTIVE]
    assert req.events[-1][0] - req.events[0][0] == 0.25


def test_gpiod_unknown_line_name(fakes):
    with pytest.raises(
        PowerError, match=r"gpio line 'NOPE' not found on /dev/gpiochip0: set power.pwrkey"
    ):
        make_power_backend(
            cfg(backend="gpiod", pwrkey="NOPE"),
            request_lines=fakes.request_lines,
            open_chip=fakes.open_chip,
        )
    assert fakes.requests == [] and fakes.chips[0].closed


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(), "needs a line"),
        (dict(pwrkey=3, supply="3"), "same line"),
        (dict(pwrkey=-1), "offset >= 0"),
        (dict(pwrkey=True), "line name or offset"),
        (dict(pwrkey=3, pwrkey_seconds=0), "positive number"),
        (dict(pwrkey=3, supply_off_seconds="x"), "number of seconds"),
    ],
)
def test_gpiod_config_errors(fakes, kw, message):
    with pytest.raises(PowerError, match=message):
        make_power_backend(
            cfg(backend="gpiod", **kw), request_lines=fakes.request_lines, open_chip=fakes.open_chip
        )


@pytest.mark.parametrize(
    "exc, message",
    [
        (OSError(errno.EBUSY, "Device or resource busy"), "busy"),
        (PermissionError(errno.EACCES, "Permission denied"), "no permission.*udev"),
        (FileNotFoundError(errno.ENOENT, "No such file"), "not found: set power.chip"),
    ],
)
def test_gpiod_request_errors(exc, message):
    def failing(path, config, consumer=None):
        raise exc

    with pytest.raises(PowerError, match=message):
        GpiodPowerBackend(pwrkey=2, request_lines=failing)


@pytest.mark.parametrize(
    "chip, path",
    [
        ("0", "/dev/gpiochip0"),
        (1, "/dev/gpiochip1"),
        ("gpiochip3", "/dev/gpiochip3"),
        ("/dev/x", "/dev/x"),
    ],
)
def test_chip_path_forms(fakes, chip, path):
    GpiodPowerBackend(chip=chip, pwrkey=0, request_lines=fakes.request_lines)
    assert fakes.requests[0].path == path


# ---------------------------------------------------------------- none


async def test_none_backend(caplog):
    with caplog.at_level(logging.INFO, logger="modemd.supervisor.power"):
        backend = make_power_backend(cfg(backend="none"))
        backend2 = make_power_backend(None)
    assert isinstance(backend, NoPowerBackend) and isinstance(backend2, NoPowerBackend)
    assert backend.name == "none" and not backend.has_supply and not backend.has_pwrkey
    # the backend says nothing itself: the supervisor prints the one notice (test_daemon)
    assert not [r for r in caplog.records if "power.backend = none" in r.getMessage()]
    for action in (backend.supply_off, backend.supply_on, backend.pwrkey_pulse):
        with pytest.raises(PowerError, match="no power backend configured"):
            await action()
    with pytest.raises(PowerError, match="no hardware power control"):
        await power_cycle(backend)
    await backend.aclose()


def test_unknown_backend():
    with pytest.raises(PowerError, match="'sysfs' is unknown"):
        make_power_backend(cfg(backend="sysfs"))


# ---------------------------------------------------------------- command backend (real processes)


def sh(script):
    return ["sh", "-c", script]


async def test_command_backend_runs_commands(tmp_path):
    out = tmp_path / "log"
    backend = make_power_backend(
        cfg(
            backend="command",
            off=sh(f"echo off >> {out}"),
            on=sh(f"echo on >> {out}"),
            pwrkey_command=sh(
                f'echo "pwrkey $MODEMD_PWRKEY_SECONDS ${{NOTIFY_SOCKET:-unset}}" >> {out}'
            ),
        )
    )
    assert backend.name == "command" and backend.has_supply and backend.has_pwrkey
    os.environ["NOTIFY_SOCKET"] = "@leak"  # must not reach the child
    try:
        await backend.supply_off()
        await backend.supply_on()
        await backend.pwrkey_pulse()
        await backend.pwrkey_pulse(0.5)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    assert out.read_text().splitlines() == ["off", "on", "pwrkey 2 unset", "pwrkey 0.5 unset"]
    await backend.aclose()


async def test_command_power_cycle(tmp_path):
    out = tmp_path / "log"
    backend = CommandPowerBackend(off=sh(f"echo off >> {out}"), on=sh(f"echo on >> {out}"))
    assert not backend.has_pwrkey
    assert await power_cycle(backend, 0.1) == "supply"
    assert out.read_text().splitlines() == ["off", "on"]


async def test_command_failure_message():
    backend = CommandPowerBackend(
        off=sh("echo first >&2; echo 'relay not found' >&2; exit 3"), on=["true"]
    )
    with pytest.raises(PowerError) as info:
        await backend.supply_off()
    msg = str(info.value)
    assert "\n" not in msg
    assert "exit status 3" in msg and "relay not found" in msg and "sh -c" in msg


async def test_command_not_found():
    backend = CommandPowerBackend(pwrkey_command=["/nonexistent/relayctl", "pulse"])
    with pytest.raises(
        PowerError,
        match=r"command not found: /nonexistent/relayctl pulse \(fix power.pwrkey_command\)",
    ):
        await backend.pwrkey_pulse()


async def test_command_timeout():
    backend = CommandPowerBackend(pwrkey_command=["sleep", "10"], timeout=0.2)
    with trio.fail_after(5):
        with pytest.raises(PowerError, match=r"timed out after 0.2 s: sleep 10"):
            await backend.pwrkey_pulse()


def test_command_config_errors():
    with pytest.raises(PowerError, match="set together"):
        make_power_backend(cfg(backend="command", off=["true"]))
    with pytest.raises(PowerError, match="needs power.off and power.on"):
        make_power_backend(cfg(backend="command"))
    with pytest.raises(PowerError, match="list of strings"):
        make_power_backend(cfg(backend="command", pwrkey_command=5))
    # the argv may come in power.pwrkey for this backend, and a string is split like a shell
    b = make_power_backend(
        cfg(backend="command", pwrkey=["relayctl", "pulse"], off="a 'b c'", on="d")
    )
    assert b.pwrkey_command == ["relayctl", "pulse"] and b.off == ["a", "b c"] and b.has_supply


async def test_power_cycle_supply_on_runs_shielded(tmp_path):
    """Cancelled during the off period, the on command still runs to completion.

    Real clock: MockClock's autojump would fire the command timeout while a child runs."""
    out = tmp_path / "log"
    backend = CommandPowerBackend(off=sh(f"echo off >> {out}"), on=sh(f"echo on >> {out}"))
    with trio.move_on_after(0.3):
        await power_cycle(backend, 12.0)
    assert out.read_text().splitlines() == ["off", "on"]


def test_module_exports():
    assert set(power.__all__) >= {"PowerBackend", "PowerError", "make_power_backend", "power_cycle"}
