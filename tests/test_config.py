"""TOML configuration: modemd.config."""

from __future__ import annotations

import dataclasses
import grp
import json
import os
import re
from pathlib import Path

import pytest

from modemd.config import (
    Config,
    ConfigError,
    Endpoint,
    ForwardConfig,
    PdpConfig,
    check_config,
    load_config,
    parse_config,
    parse_endpoint,
    parse_remote,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "modemd.toml"
PORT = '[modem]\nport = "/dev/ttyUSB2"\n'
SECRET = "Tr0ub4dor&3-s3cret"


def cfg_text(body: str) -> str:
    """A TOML document: ``body`` plus a [modem] port unless body has its own [modem]."""
    return body if "[modem]" in body else body + "\n" + PORT


def errors_of(body: str, **kw) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(cfg_text(body), **kw)
    assert str(info.value) == "\n".join(info.value.errors)
    return info.value.errors


def one_error(body: str, **kw) -> str:
    errors = errors_of(body, **kw)
    assert len(errors) == 1, errors
    return errors[0]


def existing_group() -> str:
    return grp.getgrgid(os.getgid()).gr_name


# ----------------------------------------------------------------------------- example file


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert isinstance(cfg, Config)
    assert cfg.modem.port == "/dev/modemd-at"
    assert cfg.modem.model == "bg96"
    assert cfg.pdp[0].apn == "internet"
    kinds = sorted(f.listen.kind for f in cfg.forwards)
    assert kinds == ["tcp", "unix"]
    assert len(cfg.listens) == 1 and cfg.listens[0].service_type == "TCP LISTENER"
    assert cfg.socks is not None and cfg.socks.listen == Endpoint(
        "tcp", host="127.0.0.1", port=1080
    )
    assert cfg.metrics.listen == Endpoint("tcp", host="127.0.0.1", port=9523)
    assert cfg.control.socket == "/run/modemd/control.sock"
    assert check_config(EXAMPLE) == []


def test_example_config_comments_every_key() -> None:
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[a-z_]+ = ", line):
            assert lines[i - 1].startswith("#") or lines[i - 2].startswith("#"), line


def test_example_config_with_emulate_and_port_replaced() -> None:
    cfg = load_config(EXAMPLE, emulate=True)
    pty = dataclasses.replace(cfg, modem=dataclasses.replace(cfg.modem, port="/dev/pts/7"))
    assert pty.modem.port == "/dev/pts/7"


def test_defaults() -> None:
    cfg = parse_config(cfg_text(""))
    assert cfg.modem.baudrate == 115200 and cfg.modem.model == "auto"
    assert cfg.pdp == (PdpConfig(),)
    assert cfg.power.backend == "none"
    assert cfg.forwards == () and cfg.listens == () and cfg.socks is None
    assert cfg.proxy.unacked_window == 8192
    assert cfg.log.level == "info"
    assert cfg.control.mode == 0o660
    assert cfg == Config(modem=dataclasses.replace(cfg.modem, port="/dev/ttyUSB2"))


def test_port_required_unless_emulating() -> None:
    assert one_error("[modem]\n").startswith("modem.port: required")
    assert parse_config({}, emulate=True).modem.port == ""
    assert parse_config({"modem": {"port": ""}}, emulate=True).modem.port == ""


@pytest.mark.parametrize("kind", ["directory", "regular file", "memory device"])
def test_port_that_cannot_be_a_serial_port_is_refused(tmp_path, kind) -> None:
    path = {"directory": str(tmp_path), "memory device": "/dev/null"}.get(kind)
    if path is None:
        path = str(tmp_path / "ttyFILE")
        Path(path).write_text("")
    error = one_error(f'[modem]\nport = "{path}"\n')
    assert error.startswith("modem.port: ") and f"is a {kind}, not a serial port" in error, error
    assert "/dev/ttyUSB2" in error  # names the fix


def test_port_that_is_a_tty_or_missing_is_accepted(tmp_path) -> None:
    import pty

    master, slave = pty.openpty()
    try:
        tty = os.ttyname(slave)
        assert parse_config({"modem": {"port": tty}}).modem.port == tty
    finally:
        os.close(master)
        os.close(slave)
    missing = str(tmp_path / "ttyUSB9")  # a USB port appears when the module powers up
    assert parse_config({"modem": {"port": missing}}).modem.port == missing


def test_instance_moves_the_default_control_socket_only() -> None:
    assert parse_config({}, emulate=True).control.socket == "/run/modemd/control.sock"
    cfg = parse_config({}, emulate=True, instance="modem2")
    assert cfg.control.socket == "/run/modemd/modem2/control.sock"
    mine = parse_config({"control": {"socket": "/run/x.sock"}}, emulate=True, instance="modem2")
    assert mine.control.socket == "/run/x.sock"


def test_keepalive_seconds_default_off_and_range() -> None:
    assert parse_config({}, emulate=True).proxy.keepalive_seconds == 120.0  # on by default
    assert parse_config({"proxy": {"keepalive_seconds": 0}}, emulate=True).proxy.keepalive_seconds == 0
    error = one_error('[modem]\nport = "/dev/ttyUSB2"\n[proxy]\nkeepalive_seconds = -1\n')
    assert error.startswith("proxy.keepalive_seconds: "), error


def test_config_is_frozen_and_hashable() -> None:
    cfg = load_config(EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.modem.port = "/dev/null"  # type: ignore[misc]
    hash(cfg)


# ------------------------------------------------------------------------ errors, one table

ERROR_CASES = [
    # (id, body, expected start of the single error line)
    (
        "modem-port-relative",
        '[modem]\nport = "ttyUSB2"',
        "modem.port: 'ttyUSB2' must be an absolute path",
    ),
    ("modem-port-type", "[modem]\nport = 2", "modem.port: must be a string, got integer 2"),
    (
        "modem-baudrate",
        "[modem]\nport = '/dev/x'\nbaudrate = 12345",
        "modem.baudrate: must be one of 9600, 19200, 38400, 57600, 115200, 230400, 460800, "
        "500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, "
        "3500000, 4000000, got 12345",
    ),
    (
        "modem-baudrate-str",
        "[modem]\nport = '/dev/x'\nbaudrate = '115200'",
        "modem.baudrate: must be an integer, got string '115200'",
    ),
    (
        "modem-rtscts",
        "[modem]\nport = '/dev/x'\nrtscts = 1",
        "modem.rtscts: must be true or false, got integer 1",
    ),
    (
        "modem-model",
        "[modem]\nport = '/dev/x'\nmodel = 'bg97'",
        "modem.model: must be one of auto, bg95, generic, bc25, bg96, rg500u, got 'bg97'",
    ),
    (
        "modem-lock-dir",
        "[modem]\nport = '/dev/x'\nlock_dir = 'lock'",
        "modem.lock_dir: 'lock' must be an absolute path",
    ),
    (
        "modem-health-zero",
        "[modem]\nport = '/dev/x'\nhealth_interval = 0",
        "modem.health_interval: must be between 1 and 3600, got 0",
    ),
    (
        "modem-health-type",
        "[modem]\nport = '/dev/x'\nhealth_interval = true",
        "modem.health_interval: must be a number, got boolean True",
    ),
    (
        "modem-health-nan",
        "[modem]\nport = '/dev/x'\nhealth_interval = nan",
        "modem.health_interval: must be a finite number",
    ),
    (
        "modem-timeout-zero",
        "[modem]\nport = '/dev/x'\nhealth_timeout = 0",
        "modem.health_timeout: must be greater than 0 and at most 300, got 0",
    ),
    (
        "modem-timeout-gt-interval",
        "[modem]\nport = '/dev/x'\nhealth_interval = 5\nhealth_timeout = 10",
        "modem.health_timeout: must not exceed modem.health_interval (5), got 10",
    ),
    ("pdp-context", "[pdp]\ncontext_id = 17", "pdp.context_id: must be between 1 and 16, got 17"),
    (
        "pdp-context-float",
        "[pdp]\ncontext_id = 1.0",
        "pdp.context_id: must be an integer, got float 1.0",
    ),
    ("pdp-apn", "[pdp]\napn = 'inter net'", "pdp.apn: 'inter net' is not a valid APN"),
    ("pdp-apn-quote", "[pdp]\napn = 'a\"b'", "pdp.apn: 'a\"b' contains a double quote"),
    (
        "pdp-auth",
        "[pdp]\nauth = 'mschap'",
        "pdp.auth: must be one of none, pap, chap, pap_or_chap, got 'mschap'",
    ),
    (
        "pdp-ip-type",
        "[pdp]\nip_type = 'v4'",
        "pdp.ip_type: must be one of ipv4, ipv6, ipv4v6, got 'v4'",
    ),
    (
        "pdp-user-without-auth",
        "[pdp]\nusername = 'bob'",
        'pdp.username: is set but pdp.auth = "none"',
    ),
    (
        "power-backend",
        "[power]\nbackend = 'sysfs'",
        "power.backend: must be one of gpiod, command, none, got 'sysfs'",
    ),
    (
        "power-pwrkey-neg",
        "[power]\nbackend = 'gpiod'\npwrkey = -1",
        "power.pwrkey: must be a GPIO line name or an offset >= 0",
    ),
    (
        "power-chip",
        "[power]\nbackend = 'gpiod'\nchip = 'gpiochip0'",
        "power.chip: must be a device path such as /dev/gpiochip0",
    ),
    (
        "power-gpiod-array",
        "[power]\nbackend = 'gpiod'\npwrkey = ['/bin/x']",
        "power.pwrkey: an array (a command argv) is only valid",
    ),
    (
        "power-gpiod-off",
        "[power]\nbackend = 'gpiod'\noff = ['/bin/x']",
        'power.off: only used with power.backend = "command"',
    ),
    (
        "power-command-empty",
        "[power]\nbackend = 'command'",
        'power.backend: "command" needs pwrkey',
    ),
    (
        "power-command-off-only",
        "[power]\nbackend = 'command'\noff = ['/bin/off']",
        "power.on: power.off and power.on must be given together",
    ),
    (
        "power-command-str",
        "[power]\nbackend = 'command'\npwrkey = 'PWRKEY'",
        'power.pwrkey: with backend = "command" give an argv array',
    ),
    (
        "power-command-both",
        "[power]\nbackend = 'command'\npwrkey = ['/a']\npwrkey_command = ['/b']",
        "power.pwrkey: give the pwrkey command once",
    ),
    (
        "power-argv-type",
        "[power]\nbackend = 'command'\npwrkey = ['/a', 1]",
        "power.pwrkey: must be an array of strings",
    ),
    (
        "power-argv-empty-prog",
        "[power]\nbackend = 'command'\npwrkey_command = ['']",
        "power.pwrkey_command: the program name (first element) must not be empty",
    ),
    (
        "power-seconds",
        "[power]\npwrkey_seconds = 0",
        "power.pwrkey_seconds: must be greater than 0 and at most 30, got 0",
    ),
    (
        "supervisor-jitter",
        "[supervisor]\nreboot_jitter = 1.5",
        "supervisor.reboot_jitter: must be between 0 and 1, got 1.5",
    ),
    (
        "supervisor-count",
        "[supervisor]\nack_poll_count = 0",
        "supervisor.ack_poll_count: must be between 1 and 10000, got 0",
    ),
    (
        "proxy-window",
        "[proxy]\nunacked_window = 0",
        "proxy.unacked_window: must be between 1 and 1048576, got 0",
    ),
    (
        "proxy-queue-timeout",
        "[proxy]\nqueue_timeout = -1",
        "proxy.queue_timeout: must be between 0 and 3600, got -1",
    ),
    (
        "log-level",
        "[log]\nlevel = 'INFO'",
        "log.level: must be one of debug, info, warning, error, got 'INFO'",
    ),
    (
        "metrics-listen",
        "[metrics]\nlisten = '127.0.0.1'",
        "metrics.listen: '127.0.0.1': missing port",
    ),
    (
        "metrics-udp",
        "[metrics]\nlisten = 'udp:127.0.0.1:9'",
        "metrics.listen: udp: is not allowed here; use tcp:",
    ),
    (
        "control-relative",
        "[control]\nsocket = 'control.sock'",
        "control.socket: 'control.sock' must be an absolute path",
    ),
    (
        "control-mode-int",
        "[control]\nmode = 660",
        'control.mode: must be an octal string such as "0660"',
    ),
    (
        "control-mode-bad",
        "[control]\nmode = '0999'",
        "control.mode: must be an octal permission string such as \"0660\", got '0999'",
    ),
    (
        "control-group",
        "[control]\ngroup = 'no-such-group-xyz'",
        "control.group: group 'no-such-group-xyz' does not exist on this system",
    ),
    (
        "socks-udp",
        "[socks]\nlisten = 'udp:127.0.0.1:1080'",
        "socks.listen: udp: is not allowed here",
    ),
    (
        "socks-max-clients",
        "[socks]\nmax_clients = 0",
        "socks.max_clients: must be between 1 and 65535, got 0",
    ),
    (
        "socks-mode-tcp",
        "[socks]\nmode = '0600'",
        "socks.mode: only valid for unix: listen addresses",
    ),
    (
        "socks-allow-unix",
        "[socks]\nlisten = 'unix:/run/s.sock'\nallow_non_loopback = true",
        "socks.allow_non_loopback: only meaningful for tcp:/udp:",
    ),
    (
        "forward-table",
        "[forward]\nname = 'x'",
        "forward: must be an array of tables: write [[forward]], not [forward]",
    ),
    (
        "forward-name-missing",
        "[[forward]]\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:1'",
        "forward[0].name: required",
    ),
    (
        "forward-name-bad",
        "[[forward]]\nname = 'a b'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:1'",
        "forward[0].name: 'a b' must match [A-Za-z0-9_.-]{1,64}",
    ),
    (
        "forward-name-long",
        f"[[forward]]\nname = '{'n' * 65}'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:1'",
        "forward[0].name: ",
    ),
    (
        "forward-listen-missing",
        "[[forward]]\nname = 'a'\nremote = 'a.b:1'",
        "forward[0].listen: required",
    ),
    (
        "forward-remote-missing",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'",
        "forward[0].remote: required",
    ),
    (
        "forward-remote-no-port",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b'",
        "forward[0].remote: 'a.b': missing port",
    ),
    (
        "forward-remote-port-0",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:0'",
        "forward[0].remote: 'a.b:0': port must be 1..65535, got 0",
    ),
    (
        "forward-remote-port-big",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:65536'",
        "forward[0].remote: 'a.b:65536': port must be 1..65535",
    ),
    (
        "forward-remote-port-text",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:https'",
        "forward[0].remote: 'a.b:https': port 'https' is not a number",
    ),
    (
        "forward-remote-v6-unbracketed",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = '2001:db8::1:443'",
        "forward[0].remote: '2001:db8::1:443': write IPv6 addresses in brackets",
    ),
    (
        "forward-remote-injection",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = \"evil\\\"\\r\\nAT+QPOWD=1\\r\\n:1\"",
        "forward[0].remote: 'evil\"\\r\\nAT+QPOWD=1\\r\\n' contains a double quote",
    ),
    (
        "forward-remote-bad-host",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'bad_host.example:1'",
        "forward[0].remote: 'bad_host.example' is not a valid host name",
    ),
    (
        "forward-listen-no-kind",
        "[[forward]]\nname = 'a'\nlisten = '127.0.0.1:1'\nremote = 'a.b:1'",
        "forward[0].listen: '127.0.0.1:1' must start with unix: or tcp: or udp:",
    ),
    (
        "forward-listen-hostname",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:myhost:1'\nremote = 'a.b:1'",
        "forward[0].listen: 'myhost' is not an IP address",
    ),
    (
        "forward-listen-unix-relative",
        "[[forward]]\nname = 'a'\nlisten = 'unix:x.sock'\nremote = 'a.b:1'",
        "forward[0].listen: 'x.sock' must be an absolute path",
    ),
    (
        "forward-listen-unix-long",
        f"[[forward]]\nname = 'a'\nlisten = 'unix:/{'x' * 107}'\nremote = 'a.b:1'",
        "forward[0].listen: ",
    ),
    (
        "forward-context",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:1'\ncontext_id = 2",
        "forward[0].context_id: context 2 is never activated",
    ),
    (
        "forward-mode-tcp",
        "[[forward]]\nname = 'a'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:1'\nmode = '0600'",
        "forward[0].mode: only valid for unix: listen addresses",
    ),
    (
        "forward-group-udp",
        "[[forward]]\nname = 'a'\nlisten = 'udp:127.0.0.1:1'\nremote = 'a.b:1'\ngroup = ''",
        "forward[0].group: only valid for unix: listen addresses",
    ),
    ("forward-not-table", "forward = [1]", "forward[0]: must be a table, got integer"),
    (
        "listen-protocol",
        "[[listen]]\nname = 'a'\nprotocol = 'sctp'\nmodule_port = 1\ntarget = 'tcp:127.0.0.1:1'",
        "listen[0].protocol: must be one of tcp, udp, got 'sctp'",
    ),
    (
        "listen-port-missing",
        "[[listen]]\nname = 'a'\ntarget = 'tcp:127.0.0.1:1'",
        "listen[0].module_port: required",
    ),
    (
        "listen-port-range",
        "[[listen]]\nname = 'a'\nmodule_port = 0\ntarget = 'tcp:127.0.0.1:1'",
        "listen[0].module_port: must be between 1 and 65535, got 0",
    ),
    (
        "listen-udp-to-tcp",
        "[[listen]]\nname = 'a'\nprotocol = 'udp'\nmodule_port = 53\ntarget = 'tcp:127.0.0.1:53'",
        'listen[0].target: a tcp: target does not fit protocol = "udp"; use udp:',
    ),
    (
        "listen-tcp-to-udp",
        "[[listen]]\nname = 'a'\nmodule_port = 53\ntarget = 'udp:127.0.0.1:53'",
        'listen[0].target: a udp: target does not fit protocol = "tcp"; use tcp: or unix:',
    ),
    (
        "listen-unix-udp",
        "[[listen]]\nname = 'a'\nprotocol = 'udp'\nmodule_port = 53\ntarget = 'unix:/run/x'",
        'listen[0].target: a unix: target does not fit protocol = "udp"',
    ),
    ("unknown-section", "[modme]\nport = 'x'", "modme: unknown section; did you mean 'modem'?"),
    ("unknown-top-key", "debug = true", "debug: unknown key"),
    ("unknown-key", "[pdp]\napm = 'internet'", "pdp.apm: unknown key; did you mean 'apn'?"),
    ("unknown-key-no-match", "[pdp]\nzzzzzz = 1", "pdp.zzzzzz: unknown key"),
    (
        "unknown-forward-key",
        "[[forward]]\nname = 'a'\nlisen = 'tcp:127.0.0.1:1'\nlisten = 'tcp:127.0.0.1:1'\nremote = 'a.b:1'",
        "forward[0].lisen: unknown key; did you mean 'listen'?",
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [pytest.param(b, e, id=i) for i, b, e in ERROR_CASES]
)
def test_error_names_key_path(body: str, expected: str) -> None:
    error = one_error(body)
    assert error.startswith(expected), error
    assert "\n" not in error


def test_section_not_a_table() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("modem = 3")
    assert info.value.errors == [
        "modem: must be a table ([modem]), got integer",
        "modem.port: required: the module's AT serial port, e.g. /dev/ttyUSB2 or a udev "
        "symlink such as /dev/modemd-at",
    ]


def test_unknown_key_without_suggestion_has_none() -> None:
    assert one_error("[pdp]\nzzzzzz = 1") == "pdp.zzzzzz: unknown key"


# ---------------------------------------------------------------------------- cross-checks


def fwd(name: str, listen: str, remote: str = "a.example:1", extra: str = "") -> str:
    return f"[[forward]]\nname = '{name}'\nlisten = '{listen}'\nremote = '{remote}'\n{extra}\n"


def lst(name: str, port: int, target: str = "tcp:127.0.0.1:22", protocol: str = "tcp") -> str:
    return (
        f"[[listen]]\nname = '{name}'\nprotocol = '{protocol}'\nmodule_port = {port}\n"
        f"target = '{target}'\n"
    )


def test_names_unique_across_forward_and_listen() -> None:
    error = one_error(fwd("ssh", "tcp:127.0.0.1:2000") + lst("ssh", 2222))
    assert error == "listen[0].name: 'ssh' is already used by forward[0].name"
    error = one_error(fwd("a", "tcp:127.0.0.1:2000") + fwd("a", "tcp:127.0.0.1:2001"))
    assert error == "forward[1].name: 'a' is already used by forward[0].name"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("tcp:127.0.0.1:1883", "tcp:127.0.0.1:1883"),
        ("tcp:[::1]:1883", "tcp:[0:0::1]:1883"),
        ("tcp:localhost:1883", "tcp:127.0.0.1:1883"),
        ("tcp:localhost:1883", "tcp:[::1]:1883"),
        ("unix:/run/modemd/a.sock", "unix:/run/modemd//a.sock"),
    ],
)
def test_duplicate_local_addresses(first: str, second: str) -> None:
    error = one_error(fwd("a", first) + fwd("b", second))
    assert error.startswith("forward[1].listen: "), error
    assert "forward[0].listen" in error


def test_overlapping_wildcard_addresses() -> None:
    body = fwd("a", "tcp:0.0.0.0:1883", extra="allow_non_loopback = true")
    body += fwd("b", "tcp:127.0.0.1:1883")
    error = one_error(body)
    assert error.startswith("forward[1].listen: 'tcp:127.0.0.1:1883' overlaps forward[0].listen")


def test_tcp_and_udp_on_same_port_do_not_conflict() -> None:
    cfg = parse_config(cfg_text(fwd("a", "tcp:127.0.0.1:5683") + fwd("b", "udp:127.0.0.1:5683")))
    assert [f.protocol for f in cfg.forwards] == ["tcp", "udp"]
    cfg = parse_config(cfg_text(fwd("a", "tcp:127.0.0.1:5683") + fwd("b", "tcp:127.0.0.2:5683")))
    assert len(cfg.forwards) == 2


def test_socks_metrics_control_conflicts() -> None:
    body = fwd("a", "tcp:127.0.0.1:1080") + "[socks]\n"
    assert one_error(body).startswith(
        "socks.listen: 'tcp:127.0.0.1:1080' is already used by forward[0].listen"
    )
    body = fwd("a", "tcp:127.0.0.1:9523")
    assert one_error(body).startswith(
        "metrics.listen: 'tcp:127.0.0.1:9523' is already used by forward[0].listen"
    )
    body = fwd("a", "unix:/run/modemd/control.sock")
    assert one_error(body).startswith(
        "control.socket: 'unix:/run/modemd/control.sock' is already used"
    )


def test_listen_module_ports_unique_per_protocol() -> None:
    error = one_error(lst("a", 2222) + lst("b", 2222, "tcp:127.0.0.1:23"))
    assert error == "listen[1].module_port: tcp port 2222 is already used by listen[0].module_port"
    cfg = parse_config(cfg_text(lst("a", 53) + lst("b", 53, "udp:127.0.0.1:53", "udp")))
    assert [x.service_type for x in cfg.listens] == ["TCP LISTENER", "UDP SERVICE"]


def test_context_id_defaults_to_pdp() -> None:
    cfg = parse_config(
        cfg_text("[pdp]\ncontext_id = 3\n" + fwd("a", "tcp:127.0.0.1:1") + lst("b", 2))
    )
    assert cfg.forwards[0].context_id == 3
    assert cfg.listens[0].context_id == 3


# --------------------------------------------------------------------------- non-loopback


@pytest.mark.parametrize(
    ("listen", "host"),
    [
        ("tcp:0.0.0.0:1883", "0.0.0.0"),
        ("tcp:192.168.1.10:1883", "192.168.1.10"),
        ("udp:[::]:5683", "::"),
        ("tcp:[2001:db8::1]:1883", "2001:db8::1"),
    ],
)
def test_non_loopback_forward_refused_then_allowed(listen: str, host: str) -> None:
    error = one_error(fwd("a", listen))
    assert error == (
        f"forward[0].listen: {host} is not a loopback address; set "
        "forward[0].allow_non_loopback = true to accept connections from the network"
    )
    cfg = parse_config(cfg_text(fwd("a", listen, extra="allow_non_loopback = true")))
    assert cfg.forwards[0].allow_non_loopback
    assert not cfg.forwards[0].listen.is_loopback


@pytest.mark.parametrize(
    "listen",
    [
        "tcp:127.0.0.1:1",
        "tcp:127.8.9.10:1",
        "tcp:[::1]:1",
        "tcp:localhost:1",
        "tcp:LOCALHOST:1",
        "unix:/run/a",
    ],
)
def test_loopback_forward_accepted(listen: str) -> None:
    cfg = parse_config(cfg_text(fwd("a", listen)))
    assert cfg.forwards[0].listen.is_loopback


def test_non_loopback_socks_and_metrics() -> None:
    error = one_error("[socks]\nlisten = 'tcp:0.0.0.0:1080'\n")
    assert error.startswith(
        "socks.listen: 0.0.0.0 is not a loopback address; set socks.allow_non_loopback"
    )
    cfg = parse_config(
        cfg_text("[socks]\nlisten = 'tcp:0.0.0.0:1080'\nallow_non_loopback = true\n")
    )
    assert cfg.socks is not None and cfg.socks.allow_non_loopback

    error = one_error("[metrics]\nlisten = '0.0.0.0:9523'\n")
    assert error.startswith(
        "metrics.listen: 0.0.0.0 is not a loopback address; set metrics.allow_non_loopback"
    )
    cfg = parse_config(cfg_text("[metrics]\nlisten = 'tcp:[::]:9523'\nallow_non_loopback = true\n"))
    assert cfg.metrics.listen == Endpoint("tcp", host="::", port=9523)


def test_metrics_disabled() -> None:
    cfg = parse_config(cfg_text("[metrics]\nlisten = ''\n"))
    assert cfg.metrics.listen is None


def test_control_disabled_and_prefixed() -> None:
    assert parse_config(cfg_text("[control]\nsocket = ''\n")).control.socket == ""
    cfg = parse_config(cfg_text("[control]\nsocket = 'unix:/run/x/c.sock'\n"))
    assert cfg.control.socket == "/run/x/c.sock"


def test_unix_socket_mode_and_group() -> None:
    group = existing_group()
    body = fwd("a", "unix:/run/modemd/a.sock", extra=f"mode = '0600'\ngroup = '{group}'")
    f = parse_config(cfg_text(body)).forwards[0]
    assert f.mode == 0o600
    assert f.group == group and f.gid == os.getgid()
    cfg = parse_config(
        cfg_text(f"[socks]\nlisten = 'unix:/run/s.sock'\nmode = '660'\ngroup = '{os.getgid()}'\n")
    )
    assert cfg.socks is not None and cfg.socks.mode == 0o660 and cfg.socks.gid == os.getgid()


# --------------------------------------------------------------------------------- secrets


def test_pdp_repr_hides_credentials() -> None:
    cfg = parse_config(
        cfg_text(f"[pdp]\nusername = 'alice-user'\npassword = '{SECRET}'\nauth = 'chap'\n")
    )
    assert cfg.pdp[0].password == SECRET and cfg.pdp[0].username == "alice-user"
    assert cfg.pdp[0].auth_code == 2 and cfg.pdp[0].context_type == 1
    for text in (repr(cfg), str(cfg), repr(cfg.pdp[0]), str(cfg.pdp[0])):
        assert SECRET not in text
        assert "alice-user" not in text


@pytest.mark.parametrize(
    "body",
    [
        f"[pdp]\npassword = '{SECRET}\"'\nauth = 'pap'\n",
        f'[pdp]\npassword = "{SECRET}\\r\\nAT+QPOWD=1"\nauth = "pap"\n',
        f"[pdp]\npassword = '{SECRET}' \nauth = 'mschap'\n",
        f"[pdp]\npassword = '{SECRET}'\n",
        f"[pdp]\npassword = '{SECRET * 8}'\nauth = 'pap'\n",
        f"[pdp]\npassword = '{SECRET}'\npassword_file = '/nonexistent'\nauth = 'pap'\n",
        f"[pdp]\nusername = '{SECRET}\\\\'\nauth = 'pap'\n",
        f"[pdp]\nusername = '{SECRET}\u00e9'\nauth = 'pap'\n",
        f"[pdp]\npasword = '{SECRET}'\n",
    ],
)
def test_secrets_never_in_errors(body: str) -> None:
    errors = errors_of(body)
    assert errors
    for line in errors:
        assert SECRET not in line
        assert SECRET[:6] not in line
        assert line.startswith("pdp.")


def test_secret_type_error_does_not_echo() -> None:
    assert one_error("[pdp]\npassword = 123456789\nauth = 'pap'\n") == (
        "pdp.password: must be a string, got integer"
    )


def test_password_with_auth_none_is_an_error() -> None:
    error = one_error(f"[pdp]\npassword = '{SECRET}'\n")
    assert error.startswith('pdp.password: is set but pdp.auth = "none"')


# ---------------------------------------------------------------------------- password_file


def test_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    body = "[pdp]\npassword = ''\npassword_file = 'pw'\nauth = 'pap'\n"  # "" = not set
    cfg = parse_config(cfg_text(body), base_dir=tmp_path)
    assert cfg.pdp[0].password == SECRET
    assert cfg.pdp[0].password_file == str(tmp_path / "pw")
    assert SECRET not in repr(cfg)

    (tmp_path / "pw2").write_text(SECRET + "\r\n")
    body = f"[pdp]\npassword_file = '{tmp_path / 'pw2'}'\nauth = 'pap'\n"
    assert parse_config(cfg_text(body)).pdp[0].password == SECRET


def test_password_file_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET)
    conf = tmp_path / "modemd.toml"
    conf.write_text(cfg_text("[pdp]\npassword_file = 'secret'\nauth = 'pap_or_chap'\n"))
    cfg = load_config(conf)
    assert cfg.pdp[0].password == SECRET and cfg.pdp[0].auth_code == 3


def test_password_file_errors(tmp_path: Path) -> None:
    error = one_error("[pdp]\npassword_file = 'missing'\nauth = 'pap'\n", base_dir=tmp_path)
    assert error == f"pdp.password_file: cannot read {str(tmp_path / 'missing')!r}: no such file"

    error = one_error(f"[pdp]\npassword_file = '{tmp_path}'\nauth = 'pap'\n")
    assert error.startswith("pdp.password_file: cannot read")

    (tmp_path / "bad").write_text(SECRET + '"\n')
    error = one_error("[pdp]\npassword_file = 'bad'\nauth = 'pap'\n", base_dir=tmp_path)
    assert error.startswith(
        f"pdp.password_file: the password in {str(tmp_path / 'bad')!r} contains a double quote"
    )
    assert SECRET not in error

    (tmp_path / "two-lines").write_text(SECRET + "\n\n")
    error = one_error("[pdp]\npassword_file = 'two-lines'\nauth = 'pap'\n", base_dir=tmp_path)
    assert "control character" in error and SECRET not in error

    (tmp_path / "pw").write_text(SECRET)
    error = one_error(
        f"[pdp]\npassword = '{SECRET}'\npassword_file = 'pw'\nauth = 'pap'\n", base_dir=tmp_path
    )
    assert error == (
        "pdp.password_file: pdp.password and pdp.password_file are mutually exclusive; remove one"
    )

    error = one_error("[pdp]\npassword_file = 'pw'\n", base_dir=tmp_path)
    assert error.startswith('pdp.password_file: is set but pdp.auth = "none"')


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_password_file_unreadable(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    pw.chmod(0)
    error = one_error("[pdp]\npassword_file = 'pw'\nauth = 'pap'\n", base_dir=tmp_path)
    assert "permission denied" in error


# ------------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("unix:/run/modemd/mqtt.sock", Endpoint("unix", path="/run/modemd/mqtt.sock"), None),
        ("unix:/run/modemd/../x.sock", Endpoint("unix", path="/run/x.sock"), "unix:/run/x.sock"),
        ("tcp:127.0.0.1:1883", Endpoint("tcp", host="127.0.0.1", port=1883), None),
        ("udp:127.0.0.1:5683", Endpoint("udp", host="127.0.0.1", port=5683), None),
        ("tcp:[::1]:1883", Endpoint("tcp", host="::1", port=1883), None),
        ("tcp:[0:0:0:0:0:0:0:1]:1883", Endpoint("tcp", host="::1", port=1883), "tcp:[::1]:1883"),
        ("udp:[2001:db8::1]:53", Endpoint("udp", host="2001:db8::1", port=53), None),
        ("tcp:localhost:80", Endpoint("tcp", host="localhost", port=80), None),
        ("tcp:0.0.0.0:65535", Endpoint("tcp", host="0.0.0.0", port=65535), None),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint, canonical: str | None) -> None:
    ep = parse_endpoint(text, "k")
    assert ep == expected
    assert str(ep) == (canonical or text)
    assert parse_endpoint(str(ep), "k") == ep


def test_endpoint_address() -> None:
    assert parse_endpoint("unix:/run/a", "k").address == "/run/a"
    assert parse_endpoint("tcp:[::1]:5", "k").address == ("::1", 5)
    assert parse_endpoint("127.0.0.1:9523", "k", default_kind="tcp").address == ("127.0.0.1", 9523)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "must start with"),
        ("sctp:1.2.3.4:1", "must start with"),
        ("unix:", "missing path"),
        ("unix:relative", "must be an absolute path"),
        ("unix:/run/dir/", "names a directory"),
        ("unix:/" + "x" * 107, "at most 107 bytes"),
        ("tcp:127.0.0.1", "missing port"),
        ("tcp:127.0.0.1:", "is not a number"),
        ("tcp::1883", "missing host"),
        ("tcp:127.0.0.1:0", "port must be 1..65535, got 0"),
        ("tcp:127.0.0.1:99999", "port must be 1..65535"),
        ("tcp:127.0.0.1:-1", "is not a number"),
        ("tcp:::1:1883", "in brackets"),
        ("tcp:[::1]", "missing port"),
        ("tcp:[::1:1883", "missing ']'"),
        ("tcp:[::1]1883", "expected ':PORT'"),
        ("tcp:[127.0.0.1]:1883", "only for IPv6"),
        ("tcp:[fe80::1%eth0]:1883", "zone"),
        ("tcp:example.com:1883", "not an IP address"),
        ("tcp:1.2.3:1883", "not an IP address"),
    ],
)
def test_parse_endpoint_errors(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_endpoint(text, "forward[3].listen")
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith("forward[3].listen: ")
    assert fragment in info.value.errors[0], info.value.errors[0]


def test_parse_endpoint_kinds() -> None:
    with pytest.raises(ConfigError, match=r"^k: udp: is not allowed here; use tcp: or unix:$"):
        parse_endpoint("udp:127.0.0.1:1", "k", kinds=("tcp", "unix"))


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("broker.example.com:8883", "broker.example.com", 8883),
        ("[2001:db8::1]:443", "2001:db8::1", 443),
        ("192.0.2.1:1", "192.0.2.1", 1),
        ("localhost:65535", "localhost", 65535),
    ],
)
def test_parse_remote(text: str, host: str, port: int) -> None:
    assert parse_remote(text, "k") == (host, port)


def test_forward_properties() -> None:
    cfg = parse_config(
        cfg_text(fwd("a", "udp:127.0.0.1:5683", "[2001:db8::1]:5683") + fwd("b", "unix:/run/b"))
    )
    a, b = cfg.forwards
    assert isinstance(a, ForwardConfig)
    assert a.protocol == "udp" and a.remote == "[2001:db8::1]:5683"
    assert b.protocol == "tcp" and b.remote == "a.example:1"


# --------------------------------------------------------------------------------- power


def test_power_command_backend() -> None:
    body = (
        "[power]\nbackend = 'command'\npwrkey = ['/usr/bin/pk', '--pulse']\n"
        "off = ['/usr/bin/pw', 'off']\non = ['/usr/bin/pw', 'on']\n"
    )
    p = parse_config(cfg_text(body)).power
    assert p.pwrkey_command == ("/usr/bin/pk", "--pulse")
    assert p.off == ("/usr/bin/pw", "off") and p.on == ("/usr/bin/pw", "on")
    p = parse_config(cfg_text("[power]\nbackend = 'command'\npwrkey_command = ['/x']\n")).power
    assert p.pwrkey_command == ("/x",)


def test_power_gpiod_backend() -> None:
    body = "[power]\nbackend = 'gpiod'\npwrkey = 17\npwrkey_active_low = true\nsupply = 'VBAT_EN'\n"
    p = parse_config(cfg_text(body)).power
    assert p.pwrkey == 17 and p.pwrkey_active_low and p.supply == "VBAT_EN"
    assert parse_config(cfg_text("[power]\nbackend = 'gpiod'\nsupply = ''\n")).power.supply is None


# ----------------------------------------------------------------------- all errors at once


def test_all_errors_reported_at_once() -> None:
    body = """
[modme]
[modem]
port = "dev/tty"
baudrate = 12345
[pdp]
context_id = 0
[[forward]]
name = "a"
lisen = "tcp:127.0.0.1:1"
listen = "tcp:0.0.0.0:1"
remote = "x.example"
[[listen]]
name = "b"
module_port = 70000
target = "tcp:127.0.0.1:22"
[log]
level = "loud"
"""
    errors = errors_of(body)
    prefixes = [e.split(":", 1)[0] for e in errors]
    assert prefixes == [
        "modme",
        "modem.port",
        "modem.baudrate",
        "pdp.context_id",
        "forward[0].lisen",
        "forward[0].remote",
        "forward[0].listen",
        "listen[0].module_port",
        "log.level",
    ], errors


# ------------------------------------------------------------------------------ load_config


def test_load_config_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert info.value.errors == [
        f"{missing}: no such file; create it (config/modemd.toml in the source tree is a "
        "commented example) or pass another path with --config"
    ]
    assert check_config(missing) == info.value.errors


def test_load_config_directory(tmp_path: Path) -> None:
    assert check_config(tmp_path) == [f"{tmp_path}: is a directory; give the path of the TOML file"]


def test_load_config_toml_syntax_error(tmp_path: Path) -> None:
    conf = tmp_path / "modemd.toml"
    conf.write_text('[modem]\nport = "/dev/ttyUSB2"\nbaudrate = \n')
    errors = check_config(conf)
    assert len(errors) == 1
    assert errors[0].startswith(f"{conf}: invalid TOML: ")
    assert "line 3" in errors[0]


def test_load_config_not_utf8(tmp_path: Path) -> None:
    conf = tmp_path / "modemd.toml"
    conf.write_bytes(b'[modem]\nport = "/dev/tty\xff"\n')
    assert check_config(conf) == [
        f"{conf}: not valid UTF-8 (byte offset 24); save the file as UTF-8"
    ]


def test_check_config_lists_errors(tmp_path: Path) -> None:
    conf = tmp_path / "modemd.toml"
    conf.write_text("[modem]\nport = '/dev/ttyUSB2'\nbaudrate = 1\n[log]\nlevel = 'x'\n")
    errors = check_config(conf)
    assert [e.split(":")[0] for e in errors] == ["modem.baudrate", "log.level"]


def test_parse_config_text_error_names_source() -> None:
    with pytest.raises(ConfigError, match=r"^<config>: invalid TOML: .*line 1"):
        parse_config("[modem\n")


# ------------------------------------------------------------------------------------- [sim]

PIN = "73914026"


def test_sim_defaults_to_no_pin() -> None:
    sim = parse_config(cfg_text("")).sim
    assert (sim.pin, sim.pin_file) == ("", "")


def test_sim_pin_is_secret() -> None:
    cfg = parse_config(cfg_text(f"[sim]\npin = '{PIN}'\n"))
    assert cfg.sim.pin == PIN and cfg.sim.pin_file == ""
    for text in (repr(cfg), str(cfg), repr(cfg.sim)):
        assert PIN not in text


@pytest.mark.parametrize("bad", ["123", "123456789", "12a4", " 1234", "１２３４", "12\n34"])
def test_sim_pin_must_be_4_to_8_digits(bad: str) -> None:
    error = one_error(f"[sim]\npin = {json.dumps(bad)}\n")  # a JSON string is a TOML basic string
    assert error == "sim.pin: must be 4 to 8 digits (0-9)"


def test_sim_pin_integer_names_the_fix_without_the_value() -> None:
    error = one_error("[sim]\npin = 73914026\n")
    assert error.startswith('sim.pin: must be a quoted string such as "0000"'), error
    assert PIN not in error


def test_sim_pin_file_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text(f"  {PIN}\r\n")
    conf = tmp_path / "modemd.toml"
    conf.write_text(cfg_text("[sim]\npin_file = 'pin'\n"))
    sim = load_config(conf).sim
    assert sim.pin == PIN and sim.pin_file == str(tmp_path / "pin")
    assert PIN not in repr(sim)


def test_sim_pin_file_errors_never_show_the_content(tmp_path: Path) -> None:
    error = one_error("[sim]\npin_file = 'missing'\n", base_dir=tmp_path)
    assert error == f"sim.pin_file: cannot read {str(tmp_path / 'missing')!r}: no such file"
    (tmp_path / "long").write_text(PIN + "0")
    error = one_error("[sim]\npin_file = 'long'\n", base_dir=tmp_path)
    assert error == f"sim.pin_file: the PIN in {str(tmp_path / 'long')!r} must be 4 to 8 digits (0-9)"
    assert PIN not in error
    (tmp_path / "zero").write_bytes(b"\0" * 100)
    assert one_error("[sim]\npin_file = 'zero'\n", base_dir=tmp_path).endswith("4 to 8 digits (0-9)")


def test_sim_pin_and_pin_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text(PIN)
    error = one_error(f"[sim]\npin = '{PIN}'\npin_file = 'pin'\n", base_dir=tmp_path)
    assert error == "sim.pin_file: sim.pin and sim.pin_file are mutually exclusive; remove one"
    sim = parse_config(cfg_text("[sim]\npin = ''\npin_file = 'pin'\n"), base_dir=tmp_path).sim
    assert sim.pin == PIN  # "" = not set, as for pdp.password


def test_sim_unknown_key_suggests() -> None:
    assert one_error("[sim]\npinfile = 'x'\n") == "sim.pinfile: unknown key; did you mean 'pin_file'?"
