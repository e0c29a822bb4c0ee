"""AT injection is impossible: user strings never reach the command line unchecked.

Over a real pty to the emulator: every QuectelAt method that takes a user string refuses crafted
values with ValueError before a byte is written (the emulator's log of received command lines stays
unchanged; no AT+QPOWD, no extra command), and the channel keeps working afterwards. The same values
in a configuration are refused by parse_config, naming the key. A SOCKS5 client asking for such a
host name through the running proxy gets "host unreachable" and nothing reaches the module.
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys

import pytest
import trio

from modemd.at.protocol import ProtocolError
from modemd.config import ConfigError, parse_config
from modemd.proxy.socks5_parser import REP_HOST_UNREACHABLE, REP_SUCCEEDED
from tests.conftest import FAMILIES, open_stack
from tests.sockets_helpers import (
    echo_handler,
    free_port,
    modem,
    proxy_config,
    recv_exactly,
    running_proxy,
    tcp_server,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INJECT = 'evil"\r\nAT+QPOWD=1\r\n'
# strings that must never reach an AT command line, whatever the field
BAD_COMMON = [
    INJECT,
    'evil"',                       # ends the quoted parameter early
    '","x',                        # adds parameters
    "a\\22b",                      # 27.007 \HH escape of a quote
    "a\\0D\\0AAT+QPOWD=1",          # \HH escapes of CR LF
    "x\x00y",                      # NUL
    "\x1a",                        # Ctrl-Z (ends SMS / data mode)
    "\x1b",                        # ESC (cancels)
    "a\rAT+QPOWD=1",
    "a\nAT+QPOWD=1",
    "a\tb",
    "a\x7fb",                      # DEL
    "caf\xe9",                     # latin-1, not ASCII
    "\u0435xample.com",            # Cyrillic e homoglyph
    "ex\u0430mple.com",            # Cyrillic a homoglyph
    "\uff02AT+QPOWD=1\uff02",      # fullwidth quotation marks
    "a\u2028AT+QPOWD=1",           # Unicode line separator
    "a\x85AT+QPOWD=1",             # NEL
    "a\u200bb.com",                # zero-width space
]
BAD_HOSTS = BAD_COMMON + [
    "",
    "a" * 300,
    ("a" * 60 + ".") * 5 + "com",  # 308 bytes of valid labels
    "a" * 64 + ".com",             # label too long
    "host name.com",
    "a;AT+QPOWD=1",
    "a,b",
    "[::1]",
    "fe80::1%eth0",
    "1.2.3",
    "-lead.example.com",
    "under_score.example.com",
]
BAD_APNS = BAD_COMMON + ["a" * 101, "a" * 300, "a..b", ".a", "a b", "a;b", "a,b"]
BAD_CREDENTIALS = BAD_COMMON + ["a" * 128, "p" * 300]


def no_powerdown(commands: list[str]) -> bool:
    return not any("QPOWD" in c.upper() for c in commands)


def host_calls(at, host: str):
    """Every QuectelAt call that puts `host` into a command line (the family's subset)."""
    p = at.profile
    ctx, cid = p.context_ids[0], p.connect_ids[0]
    yield "qiopen", at.qiopen(ctx, cid, "TCP", host, 80)
    yield "qiopen_and_wait", at.qiopen_and_wait(ctx, cid, "TCP", host, 80, timeout=1)
    if p.has_qidnsgip:
        yield "qidnsgip", at.qidnsgip(ctx, host)
    yield "qping", at.qping(ctx, host)
    if p.ntp_command is not None:
        yield "qntp", at.qntp(ctx, host)


async def refused(coro, match: str) -> str:
    """Await `coro`; it must raise ValueError whose message starts with `match`."""
    with trio.fail_after(5):
        with pytest.raises(ValueError) as info:
            await coro
    msg = str(info.value)
    assert msg.startswith(match), msg
    return msg


@pytest.mark.parametrize("family", FAMILIES)
async def test_quectel_at_refuses_injection_before_the_wire(family):
    async with open_stack(family) as stack:
        at, emu = stack.at, stack.emulator
        p = at.profile
        before = list(emu.commands)
        sent = at.channel.commands_sent
        for host in BAD_HOSTS:
            for _name, coro in host_calls(at, host):
                await refused(coro, "host name")
        ctx = p.context_ids[0]
        for apn in BAD_APNS:
            await refused(at.qicsgp(ctx, apn, "user", "pass", auth="pap"), "APN: ")
        for value in BAD_CREDENTIALS:
            msg = await refused(at.qicsgp(ctx, "internet", value, "pass", auth="pap"), "pdp.username: ")
            assert "QPOWD" not in msg and (len(value) < 3 or value not in msg)
            msg = await refused(at.qicsgp(ctx, "internet", "user", value, auth="pap"), "pdp.password: ")
            assert "QPOWD" not in msg and (len(value) < 3 or value not in msg)
        with pytest.raises(ValueError, match="service_type"):
            await at.qiopen(ctx, p.connect_ids[0], 'TCP",' + INJECT, "example.com", 80)

        # nothing was written: the module saw no command at all, least of all QPOWD
        assert emu.commands == before
        assert at.channel.commands_sent == sent
        await at.at()
        assert emu.commands == [*before, "AT"]
        assert no_powerdown(emu.commands)


@pytest.mark.parametrize("family", ["bg96", "rg500u"])
async def test_legal_odd_credentials_stay_inside_their_quotes(family):
    """Positive control: ';', ',', "'" and spaces are legal in credentials and reach the module
    as one QICSGP line, inside the quotes, never as a second command."""
    async with open_stack(family) as stack:
        at, emu = stack.at, stack.emulator
        before = len(emu.commands)
        user, password = "u;AT+QPOWD=1", "p, w'd;AT+QPOWD=1 "
        await at.qicsgp(1, "internet", user, password, auth="pap")
        new = emu.commands[before:]
        assert new == [f'AT+QICSGP=1,1,"internet","{user}","{password}",1']
        await at.at()  # the module is still on


async def test_malformed_command_line_fails_the_caller_not_the_channel():
    """Regression: a Command with CR/LF used to raise ProtocolError inside the channel's writer
    task, which took the whole AT channel (and the daemon's link to the module) down."""
    async with open_stack("bg96") as stack:
        at, emu = stack.at, stack.emulator
        before = list(emu.commands)
        with trio.fail_after(5):
            with pytest.raises(ProtocolError):
                await at.run("AT+CSQ\r\nAT+QPOWD=1")
            with pytest.raises(ProtocolError):
                await at.qicfg("x\r\nAT+QPOWD=1")
            await at.at()
        assert emu.commands == [*before, "AT"]


# -- the configuration path -------------------------------------------------------------------


def toml_str(s: str) -> str:
    """A TOML basic string for any text (control characters as \\uXXXX escapes)."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def config_error(data) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, emulate=True)
    return info.value


@pytest.mark.parametrize("value", BAD_APNS)
def test_config_refuses_bad_apn(value):
    for data in ({"pdp": {"apn": value}}, f"[pdp]\napn = {toml_str(value)}\n"):
        exc = config_error(data)
        assert any(e.startswith("pdp.apn: ") for e in exc.errors), exc.errors


@pytest.mark.parametrize("key", ["username", "password"])
@pytest.mark.parametrize("value", BAD_CREDENTIALS)
def test_config_refuses_bad_credentials_without_echoing_them(key, value):
    for data in (
        {"pdp": {"auth": "pap", key: value}},
        f'[pdp]\nauth = "pap"\n{key} = {toml_str(value)}\n',
    ):
        exc = config_error(data)
        assert any(e.startswith(f"pdp.{key}: ") for e in exc.errors), exc.errors
        assert "QPOWD" not in str(exc)
        if len(value) >= 3:
            assert value not in str(exc)


@pytest.mark.parametrize("value", BAD_CREDENTIALS)
def test_config_refuses_bad_password_file_without_echoing_it(tmp_path, value):
    (tmp_path / "pw").write_bytes(value.encode("utf-8") + b"\n")
    with pytest.raises(ConfigError) as info:
        parse_config(
            {"pdp": {"auth": "pap", "password_file": "pw"}}, base_dir=tmp_path, emulate=True
        )
    errors = info.value.errors
    assert any(e.startswith("pdp.password_file: ") for e in errors), errors
    assert "QPOWD" not in str(info.value)


def test_config_password_file_read_is_bounded():
    """Regression: password_file = "/dev/zero" used to be read without bound (memory exhaustion).
    Run in a child with a 1 GiB address-space limit and a time limit, so a regression fails
    instead of eating the machine."""
    code = (
        "from modemd.config import ConfigError, parse_config\n"
        "try:\n"
        "    parse_config({'pdp': {'auth': 'pap', 'password_file': '/dev/zero'}}, emulate=True)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, preexec_fn=limit,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pdp.password_file: "), out.stdout


CONFIG_BAD_HOSTS = [h for h in BAD_HOSTS if not h.startswith("[")]  # [v6]:port is config syntax


@pytest.mark.parametrize("host", CONFIG_BAD_HOSTS)
def test_config_refuses_bad_forward_remote(host):
    remote = f"[{host}]:443" if ":" in host and not host.startswith("[") else f"{host}:443"
    fwd = {"name": "f", "listen": "tcp:127.0.0.1:1883", "remote": remote}
    for data in (
        {"forward": [fwd]},
        f'[[forward]]\nname = "f"\nlisten = "tcp:127.0.0.1:1883"\nremote = {toml_str(remote)}\n',
    ):
        exc = config_error(data)
        assert any(e.startswith("forward[0].remote: ") for e in exc.errors), exc.errors
        assert len(exc.errors) == 1, exc.errors  # nothing else is wrong with this config


# -- SOCKS5 through the running proxy -----------------------------------------------------------


def socks_domain_request(name: bytes, port: int) -> bytes:
    return bytes([5, 1, 0, 3, len(name)]) + name + struct.pack("!H", port)


async def socks_connect(port: int, name: bytes, dport: int) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x05\x01\x00" + socks_domain_request(name, dport))
    choice = await recv_exactly(stream, 2)
    assert choice == b"\x05\x00"
    reply = await recv_exactly(stream, 10)
    return stream, reply


SOCKS_BAD_NAMES = [
    INJECT.encode(),
    b'evil"',
    b"a\\22b",
    b"x\x00y",
    b"\x1a",
    b"a\rb",
    b"a\nb",
    "\u0435xample.com".encode(),
    b"\xff\xfe",
    b"a" * 255,
    b"",
]


async def test_socks5_refuses_injected_host_names_end_to_end():
    port = free_port()
    cfg = proxy_config(f'[socks]\nlisten = "tcp:127.0.0.1:{port}"\n')
    async with modem() as rig, tcp_server(echo_handler) as target, running_proxy(rig, cfg):
        emu = rig.emu
        before = list(emu.commands)
        with trio.fail_after(20):
            for name in SOCKS_BAD_NAMES:
                stream, reply = await socks_connect(port, name, target.port)
                assert reply[:2] == bytes([5, REP_HOST_UNREACHABLE]), (name, reply)
                assert await stream.receive_some(1) == b""  # closed after the refusal
                await stream.aclose()
            # nothing reached the module for any of them
            assert not [c for c in emu.commands[len(before):] if "QIOPEN" in c.upper()]
            assert no_powerdown(emu.commands)

            # positive control: a legal name goes through to the module and the echo server
            stream, reply = await socks_connect(port, b"localhost", target.port)
            assert reply[:2] == bytes([5, REP_SUCCEEDED]), reply
            await stream.send_all(b"ping")
            assert await recv_exactly(stream, 4) == b"ping"
            await stream.aclose()
        opens = [c for c in emu.commands[len(before):] if "QIOPEN" in c.upper()]
        assert len(opens) == 1 and '"localhost"' in opens[0], opens
        assert no_powerdown(emu.commands)
