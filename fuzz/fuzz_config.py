#!/usr/bin/env python3
"""Fuzz the configuration loader: modemd.config.parse_config.

Byte 0 chooses the mode:

* even: the rest is TOML text, given to parse_config as bytes and (if it decodes) as str;
* odd:  the rest drives a structured random configuration (a dict as tomllib would return it: the
  real sections and keys mixed with unknown ones, values of every TOML type, awkward strings, huge
  integers, NaN, dates) plus a random PDP password of 12..40 letters.

Only ConfigError may escape. The password must never appear in an error message: where it is in the
input exactly once, the run is repeated with a different password of the same length, and a leak is
reported when the message shows each run's own password. Relative password_file paths resolve in an
empty temporary directory holding one file, ``pw.txt``.
"""

from __future__ import annotations

import copy
import datetime
import math
import os
import sys
import tempfile

from _common import Input, instrumented, main

with instrumented():
    from modemd.config import ConfigError, parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib

BASE_DIR = tempfile.mkdtemp(prefix="modemd-fuzz-config-")
with open(os.path.join(BASE_DIR, "pw.txt"), "w") as f:
    f.write("s3cret-Password\n")

SECTIONS = {
    "modem": ("port", "baudrate", "rtscts", "model", "lock_dir", "health_interval", "health_timeout"),
    "pdp": ("context_id", "apn", "username", "password", "password_file", "auth", "ip_type"),
    "power": (
        "backend", "chip", "pwrkey", "pwrkey_active_low", "supply", "supply_active_low", "off",
        "on", "pwrkey_command", "pwrkey_seconds", "supply_off_seconds",
    ),
    "supervisor": (
        "healthy_reset_seconds", "reboot_jitter", "ack_poll_interval", "ack_poll_count",
        "reconcile_interval",
    ),
    "forward": ("name", "listen", "remote", "context_id", "mode", "group", "allow_non_loopback"),
    "listen": ("name", "protocol", "module_port", "target", "context_id"),
    "socks": ("listen", "mode", "group", "allow_non_loopback", "handshake_timeout", "max_clients"),
    "proxy": ("queue_timeout", "queue_limit", "linger_seconds", "unacked_window"),
    "metrics": ("listen", "allow_non_loopback"),
    "control": ("socket", "mode", "group"),
    "log": ("level",),
}  # fmt: skip
ARRAYS = ("forward", "listen")
STRINGS = (
    "", "/dev/ttyUSB2", "tcp:127.0.0.1:1883", "unix:/run/modemd/x.sock", "udp:[::1]:5683",
    "tcp:0.0.0.0:1080", "tcp:localhost:1", "127.0.0.1:9523", "broker.example.com:8883",
    "[2001:db8::1]:443", "[::1]", "1.2.3:4", "0660", "777", "root", "0", "\u00b2", "\u0661",
    "a\x00b", 'evil"\r\nAT+QPOWD=1\r\n', "a\\22b", "x\x00y", "\x1a", "internet", "pap", "none",
    "chap", "ipv4", "ipv4v6", "auto", "bg96", "command", "gpiod", "/bin/true", "pw.txt",
    "missing.txt", "/dev/null", "/run/lock", "debug", "tcp", "udp", "mqtt", "a" * 300,
    "unix:/" + "d" * 200, "tcp:[fe80::1%eth0]:80", "\u0430pi.example.com:443", "-1", "1e400",
)  # fmt: skip
NUMBERS = (
    0, 1, -1, 2, 5, 16, 17, 30, 100, 115200, 12345, 65535, 65536, 2**63, -(2**63), 10**400,
    0.0, 0.5, -0.5, 1e308, math.inf, -math.inf, math.nan,
)
OTHER = (
    True, False, datetime.date(1979, 5, 27), datetime.time(7, 32),
    datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.timezone.utc),
)


def value(inp: Input, depth: int = 0):
    kind = inp.int(0, 7 if depth < 2 else 4)
    if kind <= 1:
        return inp.pick(STRINGS)
    if kind == 2:
        return inp.text(40)
    if kind == 3:
        return inp.pick(NUMBERS)
    if kind == 4:
        return inp.pick(OTHER)
    if kind == 5:
        return [value(inp, depth + 1) for _ in range(inp.int(0, 3))]
    if kind == 6:
        return [inp.pick(STRINGS) for _ in range(inp.int(0, 3))]
    return table(inp, inp.pick(tuple(SECTIONS)), depth + 1)


def table(inp: Input, section: str, depth: int) -> dict:
    keys = SECTIONS[section]
    out: dict = {}
    for _ in range(inp.int(0, 8)):
        k = inp.pick(keys) if inp.int(0, 7) else inp.pick(("lisen", "pasword", "x", "")) + inp.text(4)
        out[k] = value(inp, depth)
    return out


def structured(inp: Input) -> tuple[dict, str]:
    data: dict = {}
    for _ in range(inp.int(0, 12)):
        section = inp.pick(tuple(SECTIONS)) if inp.int(0, 7) else inp.text(8)
        if section in ARRAYS and inp.int(0, 3):
            data[section] = [table(inp, section, 1) for _ in range(inp.int(0, 3))]
        elif section in SECTIONS and inp.int(0, 7):
            data[section] = table(inp, section, 1)
        else:
            data[section] = value(inp)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    password = "".join(letters[b % 52] for b in inp.bytes(inp.int(12, 40)))
    if len(password) >= 12:
        pdp = data.get("pdp")
        if not isinstance(pdp, dict):
            pdp = data["pdp"] = {}
        pdp["password"] = password
    return data, password


def other_password(password: str) -> str:
    """A different string of the same length and alphabet (so validity does not change)."""
    return "".join("Q" if c != "Q" else "Z" for c in password)


def run(data, emulate: bool) -> str | None:
    """parse_config(data): the ConfigError text, or None when the config is valid."""
    try:
        parse_config(data, BASE_DIR, emulate=emulate)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and exc.errors, "ConfigError without a message"
        return msg
    return None


def check_leak(password: str, msg: str | None, msg_other: str | None) -> None:
    if msg is None or password not in msg:
        return
    other = other_password(password)
    assert msg_other is None or other not in msg_other, (
        f"the PDP password appears in the error message:\n{msg}"
    )


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    head = inp.byte()
    emulate = bool(head & 2)
    if head & 1:
        cfg, password = structured(inp)
        msg = run(cfg, emulate)
        other = other_password(password)
        if len(password) >= 12 and repr(cfg).count(password) == 1 and other not in repr(cfg):
            twin = copy.deepcopy(cfg)
            twin["pdp"]["password"] = other
            check_leak(password, msg, run(twin, emulate))
        return
    raw = inp.rest()
    msg = run(raw, emulate)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return
    assert run(text, emulate) == msg
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    pdp = parsed.get("pdp")
    password = pdp.get("password") if isinstance(pdp, dict) else None
    if (
        isinstance(password, str) and len(password) >= 12 and password.isascii()
        and password.isalpha() and text.count(password) == 1
        and other_password(password) not in text
    ):
        check_leak(password, msg, run(text.replace(password, other_password(password)), emulate))


if __name__ == "__main__":
    main(test_one_input)
    sys.exit(0)
