"""The sections of modemd.toml as frozen dataclasses; field metadata is the schema.

Each field that is a TOML key is a :func:`~modemd.config.schema.setting`; rules across fields of
one section are the functions in the class's ``__checks__``.  Rules across sections (unique names,
overlapping listeners, context references) are in ``checks.py``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from modemd.at.commands import AUTH, IP_TYPES
from modemd.instance import control_socket
from modemd.profiles import MODEL_NAMES
from modemd.validate import CREDENTIAL_MAX, check_apn, check_credential, check_pin

from .endpoints import Endpoint
from .errors import fmt_num, got, show, typename
from .kinds import (
    Argv,
    Bool,
    EndpointKind,
    GpioLine,
    Group,
    Int,
    Mode,
    Num,
    Remote,
    SecretFile,
    Str,
    UnixPath,
)
from .schema import ARRAY, OPTIONAL, TABLE_OR_ARRAY, At, Context, Table, section, setting

#: Linux termios rates from 9600 up (B9600 .. B4000000)
BAUDRATES = (
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
    1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
)  # fmt: skip
MODELS = ("auto", *MODEL_NAMES)
POWER_BACKENDS = ("gpiod", "command", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
CONTEXT_ID_RANGE = (1, 16)
NAME_PATTERN = "[A-Za-z0-9_.-]{1,64}"
_NAME_RE = re.compile(NAME_PATTERN + r"\Z")
MEMORY_DEVICES_MAJOR = 1  # /dev/null, /dev/zero, /dev/urandom ...: character devices, never a tty
#: a PIN file holds a few digits and maybe a newline; more is not a PIN
PIN_FILE_MAX = 64


# ------------------------------------------------------------------------------- value checks


def _check_abs_path(value: str, key: str = "") -> None:
    if not value.startswith("/"):
        raise ValueError(f"{show(value)} must be an absolute path")
    if "\0" in value:
        raise ValueError("the path contains a NUL byte")


class SerialPort(Str):
    """A port that exists must be a character device that can be a tty (a missing one is fine:
    a USB module's port appears when the module is powered); "" only when emulating."""

    def parse(self, value: Any, at: At) -> str:
        port = super().parse(value, at)
        if port or not at.ctx.emulate:
            _check_serial_port(port)
        return port


def _check_serial_port(value: str) -> None:
    _check_abs_path(value)
    try:
        st = os.stat(value)
    except OSError:
        return
    fix = "name the module's AT port, e.g. /dev/ttyUSB2 or /dev/modemd-at"
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{show(value)} is a directory, not a serial port: {fix}")
    if stat.S_ISREG(st.st_mode):
        raise ValueError(f"{show(value)} is a regular file, not a serial port: {fix}")
    if not stat.S_ISCHR(st.st_mode):
        raise ValueError(f"{show(value)} is not a character device: {fix}")
    if os.major(st.st_rdev) == MEMORY_DEVICES_MAJOR:
        raise ValueError(f"{show(value)} is a memory device, not a serial port: {fix}")


def _check_name(value: str, key: str = "") -> None:
    if not _NAME_RE.match(value):
        raise ValueError(f"{show(value)} must match {NAME_PATTERN}")


def _check_chip(value: str, key: str = "") -> None:
    if not value.startswith("/"):
        raise ValueError(f"must be a device path such as /dev/gpiochip0, got {show(value)}")


def _strip_newline(raw: bytes) -> bytes:
    """A password file's one trailing line end (spaces are part of a password)."""
    if raw.endswith(b"\r\n"):
        return raw[:-2]
    return raw[:-1] if raw.endswith(b"\n") else raw


class Pin(Str):
    """A SIM PIN: a quoted string of 4 to 8 digits (a TOML integer would lose leading zeros)."""

    def parse(self, value: Any, at: At) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                'must be a quoted string such as "0000" (a TOML integer loses leading zeros), '
                "got integer"
            )
        pin = super().parse(value, at)
        return check_pin(pin, at.key) if pin else ""


def _first_context(ctx: Context) -> int:
    """An entry without context_id uses the first context [pdp] / [[pdp]] configures."""
    pdp = ctx.sections.get("pdp")
    return pdp[0].context_id if isinstance(pdp, tuple) and pdp else 1


class DnsServers:
    """Up to two DNS servers (AT+QIDNSCFG <pridnsaddr>, <secdnsaddr>) as IP literals."""

    def parse(self, value: Any, at: At) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ValueError(
                'must be an array of one or two IP addresses, e.g. ["8.8.8.8", "2001:4860:4860::8888"]'
                f", {got(value, at.secret)}"
            )
        if not 1 <= len(value) <= 2:
            raise ValueError(f"gives a primary and at most a secondary server, got {len(value)}")
        out = []
        for x in value:
            try:
                out.append(str(ipaddress.ip_address(x)))
            except ValueError:
                raise ValueError(f"{show(x)} is not an IP address (a DNS server is written as "
                                 "an IPv4 or IPv6 literal, no brackets, no port)") from None
        return tuple(out)


# ---------------------------------------------------------------------------- section checks


def _timeout_within_interval(t: Table) -> None:
    interval, timeout = t.value("health_interval"), t.value("health_timeout")
    if timeout > interval:
        t.err(
            "health_timeout",
            f"must not exceed {t.key('health_interval')} ({fmt_num(interval)}), "
            f"got {fmt_num(timeout)}",
        )


def _credentials_need_auth(t: Table) -> None:
    if t.raw("auth", "none") != "none":
        return
    for name in ("username", "password"):
        if t.value(name):
            key = "password_file" if name == "password" and t.value("password_file") else name
            t.err(
                key,
                f'is set but {t.key("auth")} = "none", so it would never be sent; set '
                f'{t.key("auth")} to "pap", "chap" or "pap_or_chap"',
            )


def _power_commands(t: Table) -> None:
    """pwrkey may be an argv (for backend "command"); keys of the backend not selected are
    ignored, except where they clearly contradict the choice."""
    backend = t.value("backend")
    commands_ok = not t.failed & {"pwrkey", "pwrkey_command", "off", "on"}
    pwrkey = t.value("pwrkey")
    if isinstance(pwrkey, tuple):
        t.set("pwrkey", "MODEM_PWRKEY")
        if backend == "gpiod":
            commands_ok = False
            t.err(
                "pwrkey",
                f'an array (a command argv) is only valid with {t.key("backend")} = "command"; '
                "for gpiod give a line name or an offset",
            )
        elif t.value("pwrkey_command"):
            commands_ok = False
            t.err("pwrkey", "give the pwrkey command once: pwrkey or pwrkey_command, not both")
        else:
            t.set("pwrkey_command", pwrkey)
    off, on = t.value("off"), t.value("on")
    if backend == "gpiod":
        for k in ("off", "on", "pwrkey_command"):
            if t.value(k):
                t.err(k, f'only used with {t.key("backend")} = "command" (backend is "gpiod")')
    if backend == "command" and commands_ok:
        if bool(off) != bool(on):
            t.err(
                "on" if off else "off", f"{t.key('off')} and {t.key('on')} must be given together"
            )
        if not (t.value("pwrkey_command") or off or on):
            t.err(
                "backend",
                '"command" needs pwrkey = [...] (or pwrkey_command), and/or off = [...] '
                "together with on = [...]",
            )


class PwrKey(GpioLine):
    """The PWRKEY: a gpiod line, or (backend "command") the argv that pulses it."""

    def parse(self, value: Any, at: At) -> str | int | tuple[str, ...] | None:
        if isinstance(value, list):
            return Argv().parse(value, at)
        if at.table.value("backend") == "command" and not at.table.raw("pwrkey_command"):
            raise ValueError(
                'with backend = "command" give an argv array, e.g. ["/usr/local/bin/pwrkey"], '
                f"got {typename(value)} {show(value)}"
            )
        return super().parse(value, at)


def _unix_only(t: Table) -> None:
    """mode and group set a unix socket file's permissions."""
    listen = None if "listen" in t.failed else t.value("listen")
    if listen is not None and listen.kind != "unix":
        for k in ("mode", "group"):
            if t.has(k):
                t.err(k, "only valid for unix: listen addresses")


def _loopback(t: Table) -> None:
    """A listener reachable from the network must be asked for."""
    listen, allow = t.value("listen"), t.value("allow_non_loopback")
    if listen is None or "listen" in t.failed:
        return
    if listen.kind == "unix":
        if allow:
            t.err("allow_non_loopback", "only meaningful for tcp:/udp: listen addresses")
    elif not listen.is_loopback and not allow:
        t.err(
            "listen",
            f"{listen.host} is not a loopback address; set {t.key('allow_non_loopback')} = true "
            "to accept connections from the network",
        )


def _target_fits_protocol(t: Table) -> None:
    target, protocol = t.value("target"), t.value("protocol")
    kinds = ("tcp", "unix") if protocol == "tcp" else ("udp",)
    if target is not None and target.kind not in kinds:
        allowed = " or ".join(f"{k}:" for k in kinds)
        t.err(
            "target", f'a {target.kind}: target does not fit protocol = "{protocol}"; use {allowed}'
        )
        t.drop("target")


# ---------------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ModemConfig:
    port: str = setting(
        "",
        SerialPort(),
        doc='the AT serial port; "" only when emulating: the caller substitutes the pty',
        required=lambda ctx: None if ctx.emulate else (
            "required: the module's AT serial port, e.g. /dev/ttyUSB2 or a udev symlink "
            "such as /dev/modemd-at"
        ),
    )  # fmt: skip
    baudrate: int = setting(115200, Int(choices=BAUDRATES), doc="the tty's rate")
    rtscts: bool = setting(False, Bool(), doc="hardware flow control")
    model: str = setting("auto", Str(choices=MODELS), doc='a family name, or "auto" to detect it')
    lock_dir: str = setting("/run/lock", Str(check=_check_abs_path), doc="UUCP lock files")
    health_interval: float = setting(
        10.0, Num(1, 3600), doc="seconds between health AT (a hung idle module is noticed in ~15 s)"
    )
    health_timeout: float = setting(5.0, Num(0, 300, lo_open=True), doc="seconds")

    __checks__: ClassVar = (_timeout_within_interval,)


@dataclass(frozen=True)
class PdpConfig:
    context_id: int = setting(1, Int(*CONTEXT_ID_RANGE), doc="the PDP context modemd activates")
    apn: str = setting("internet", Str(check=check_apn), doc='"" = network default')
    username: str = setting("", Str(check=check_credential), secret=True)
    password: str = setting(
        "",
        Str(check=check_credential),
        doc="from pdp.password or the content of pdp.password_file",
        secret=True,
    )
    password_file: str = setting(
        "",
        SecretFile(
            "password", "password", CREDENTIAL_MAX + 3, _strip_newline,
            check_credential,
        ),
        doc='the resolved path the password was read from, "" if none',
        excludes="password",
    )  # fmt: skip
    auth: str = setting("none", Str(choices=tuple(AUTH)), doc="<authentication> of AT+QICSGP")
    ip_type: str = setting("ipv4", Str(choices=tuple(IP_TYPES)), doc="<context_type> of AT+QICSGP")
    dns: tuple[str, ...] = setting(
        (), DnsServers(), doc="AT+QIDNSCFG after activation; () = the network's"
    )

    __checks__: ClassVar = (_credentials_need_auth,)

    @property
    def auth_code(self) -> int:
        """<authentication> for AT+QICSGP: 0 none, 1 PAP, 2 CHAP, 3 PAP or CHAP."""
        return AUTH[self.auth]

    @property
    def context_type(self) -> int:
        """<context_type> for AT+QICSGP: 1 IPv4, 2 IPv6, 3 IPv4v6."""
        return IP_TYPES[self.ip_type]


@dataclass(frozen=True)
class SimConfig:
    pin: str = setting(
        "", Pin(), doc='from sim.pin or the content of sim.pin_file ("" = none)', secret=True
    )
    pin_file: str = setting(
        "",
        SecretFile("pin", "PIN", PIN_FILE_MAX, bytes.strip, check_pin),
        doc='the resolved path the PIN was read from, "" if none',
        excludes="pin",
    )


@dataclass(frozen=True)
class PowerConfig:
    backend: str = setting("none", Str(choices=POWER_BACKENDS), doc="how the module is powered")
    chip: str = setting("/dev/gpiochip0", Str(check=_check_chip), doc="gpiod chip")
    pwrkey: str | int = setting(
        "MODEM_PWRKEY", PwrKey(), doc="gpiod line name or offset (an argv: pwrkey_command)"
    )
    pwrkey_active_low: bool = setting(False, Bool())
    supply: str | int | None = setting(
        None, GpioLine(optional=True), doc="gpiod line enabling the supply (active = powered)"
    )
    supply_active_low: bool = setting(False, Bool())
    off: tuple[str, ...] = setting((), Argv(), doc='backend "command": argv')
    on: tuple[str, ...] = setting((), Argv(), doc='backend "command": argv')
    pwrkey_command: tuple[str, ...] = setting((), Argv(), doc='backend "command": argv')
    pwrkey_seconds: float = setting(2.0, Num(0, 30, lo_open=True), doc="PWRKEY pulse")
    supply_off_seconds: float = setting(12.0, Num(0, 600), doc="supply cut")

    __checks__: ClassVar = (_power_commands,)


@dataclass(frozen=True)
class SupervisorConfig:
    healthy_reset_seconds: float = setting(3600.0, Num(0, 7 * 86400, lo_open=True))
    reboot_jitter: float = setting(0.1, Num(0, 1), doc="fraction 0..1")
    ack_poll_interval: float = setting(5.0, Num(0, 600, lo_open=True))
    ack_poll_count: int = setting(24, Int(1, 10000))
    reconcile_interval: float = setting(10.0, Num(0, 3600, lo_open=True))


_NAME = Str(check=_check_name)
_NAME_REQUIRED = f"required: a unique name matching {NAME_PATTERN}"


def _gid() -> Any:
    return setting(None, doc="the group's gid, resolved at load time")


@dataclass(frozen=True)
class ForwardConfig:
    name: str = setting(kind=_NAME, required=_NAME_REQUIRED)
    listen: Endpoint = setting(kind=EndpointKind(), doc="the local listener", required="required")
    remote_host: str = setting(
        kind=Remote("remote_port"),
        key="remote",
        doc="validated host name or IP literal (IPv6 without brackets)",
        required="required: HOST:PORT the module connects to, e.g. broker.example.com:8883",
    )
    remote_port: int = setting(doc="set with remote_host")
    context_id: int = setting(1, Int(*CONTEXT_ID_RANGE), default_from=_first_context)
    mode: int = setting(0o660, Mode(), doc="unix listeners only")
    group: str = setting("", Group(), doc='unix listeners only; "" = the daemon\'s group')
    gid: int | None = _gid()
    allow_non_loopback: bool = setting(False, Bool())

    __checks__: ClassVar = (_unix_only, _loopback)

    @property
    def protocol(self) -> Literal["tcp", "udp"]:
        """The module socket type: "udp" for a udp: listener, else "tcp"."""
        return "udp" if self.listen.kind == "udp" else "tcp"

    @property
    def remote(self) -> str:
        host = f"[{self.remote_host}]" if ":" in self.remote_host else self.remote_host
        return f"{host}:{self.remote_port}"


@dataclass(frozen=True)
class ListenConfig:
    name: str = setting(kind=_NAME, required=_NAME_REQUIRED)
    protocol: Literal["tcp", "udp"] = setting(
        kind=Str(choices=("tcp", "udp")),
        doc='tcp -> "TCP LISTENER", udp -> "UDP SERVICE"; absent: tcp',
        default_from=lambda ctx: "tcp",
    )
    module_port: int = setting(
        kind=Int(1, 65535),
        required="required: the port the module listens on, 1..65535",
    )
    target: Endpoint = setting(
        kind=EndpointKind(), doc="tcp: tcp:/unix:, udp: udp:", required="required"
    )
    context_id: int = setting(1, Int(*CONTEXT_ID_RANGE), default_from=_first_context)

    __checks__: ClassVar = (_target_fits_protocol,)

    @property
    def service_type(self) -> str:
        """The QIOPEN <service_type> for this listener."""
        return "TCP LISTENER" if self.protocol == "tcp" else "UDP SERVICE"


@dataclass(frozen=True)
class SocksConfig:
    listen: Endpoint = setting(
        Endpoint("tcp", host="127.0.0.1", port=1080), EndpointKind(("tcp", "unix"))
    )
    mode: int = setting(0o660, Mode(), doc="unix listeners only")
    group: str = setting("", Group(), doc="unix listeners only")
    gid: int | None = _gid()
    allow_non_loopback: bool = setting(False, Bool())
    handshake_timeout: float = setting(10.0, Num(0, 600, lo_open=True))
    max_clients: int = setting(64, Int(1, 65535))
    context_id: int = setting(1, Int(*CONTEXT_ID_RANGE), default_from=_first_context)

    __checks__: ClassVar = (_unix_only, _loopback)


@dataclass(frozen=True)
class ProxyConfig:
    queue_timeout: float = setting(30.0, Num(0, 3600))
    queue_limit: int = setting(64, Int(0, 65535))
    linger_seconds: float = setting(30.0, Num(0, 3600))
    unacked_window: int = setting(8192, Int(1, 1 << 20))
    direct_push: bool = setting(True, Bool())
    keepalive_seconds: float = setting(
        120.0, Num(0, 36000), doc="the module's TCP keepalive idle time; 0 = off"
    )


@dataclass(frozen=True)
class MetricsConfig:
    listen: Endpoint | None = setting(
        Endpoint("tcp", host="127.0.0.1", port=9523),
        EndpointKind(("tcp",), default_kind="tcp", empty_none=True),
        doc='"" = disabled',
    )
    allow_non_loopback: bool = setting(False, Bool())

    __checks__: ClassVar = (_loopback,)


@dataclass(frozen=True)
class ControlConfig:
    socket: str = setting(
        "/run/modemd/control.sock",
        UnixPath(),
        doc='"" = no control socket',
        default_from=lambda ctx: control_socket(ctx.instance),
    )
    mode: int = setting(0o660, Mode())
    group: str = setting("", Group())
    gid: int | None = _gid()


@dataclass(frozen=True)
class LogConfig:
    level: str = setting("info", Str(choices=LOG_LEVELS))


@dataclass(frozen=True)
class Config:
    modem: ModemConfig = section(ModemConfig)
    pdp: tuple[PdpConfig, ...] = section(PdpConfig, TABLE_OR_ARRAY)
    sim: SimConfig = section(SimConfig)
    power: PowerConfig = section(PowerConfig)
    supervisor: SupervisorConfig = section(SupervisorConfig)
    forwards: tuple[ForwardConfig, ...] = section(ForwardConfig, ARRAY, key="forward")
    listens: tuple[ListenConfig, ...] = section(ListenConfig, ARRAY, key="listen")
    socks: SocksConfig | None = section(SocksConfig, OPTIONAL)
    proxy: ProxyConfig = section(ProxyConfig)
    metrics: MetricsConfig = section(MetricsConfig)
    control: ControlConfig = section(ControlConfig)
    log: LogConfig = section(LogConfig)

    def context(self, context_id: int) -> PdpConfig | None:
        """The [[pdp]] entry of `context_id`, None when no entry configures it."""
        return next((p for p in self.pdp if p.context_id == context_id), None)

    @property
    def context_ids(self) -> tuple[int, ...]:
        """The configured contexts in file order; the first is the default context."""
        return tuple(p.context_id for p in self.pdp)
