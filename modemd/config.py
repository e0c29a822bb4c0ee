"""TOML configuration -> frozen dataclasses, every error with its key path.

Public API::

    cfg = load_config(path)                    # raises ConfigError listing EVERY problem
    cfg = parse_config(data_or_toml_text, base_dir=None, emulate=False)
    errors = check_config(path)                # [] when valid (for `modemd check-config FILE`)
    ep = parse_endpoint("tcp:[::1]:1883", "forward[0].listen")     # raises ConfigError
    host, port = parse_remote("broker.example.com:8883", "forward[0].remote")

``ConfigError.errors`` is the list of lines; ``str(ConfigError)`` joins them with newlines.
Each line reads ``"<key path>: <problem>"``, e.g. ``"modem.baudrate: must be one of 9600, ...,
got 12345"`` or ``"forward[0].lisen: unknown key; did you mean 'listen'?"``.

Secrets (``pdp.username``, ``pdp.password`` and the content of ``pdp.password_file``) never
appear in a repr, in ``str()`` of a config object or in an error message.  Note that
``dataclasses.asdict()`` does return them: never log its result.

With ``emulate=True`` ``modem.port`` may be left out (``""``); the caller substitutes the
emulator's pty: ``dataclasses.replace(cfg, modem=dataclasses.replace(cfg.modem, port=pty))``.

Relative ``pdp.password_file`` paths are taken relative to ``base_dir`` (``load_config`` uses
the config file's directory, ``parse_config`` the current directory unless told otherwise).
Unix socket paths must be absolute.
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modemd.instance import control_socket
from modemd.validate import CREDENTIAL_MAX, check_apn, check_credential, check_hostname

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "AUTH_MODES",
    "BAUDRATES",
    "IP_TYPES",
    "LOG_LEVELS",
    "MODELS",
    "POWER_BACKENDS",
    "Config",
    "ConfigError",
    "ControlConfig",
    "Endpoint",
    "ForwardConfig",
    "ListenConfig",
    "LogConfig",
    "MetricsConfig",
    "ModemConfig",
    "PdpConfig",
    "PowerConfig",
    "ProxyConfig",
    "SocksConfig",
    "SupervisorConfig",
    "check_config",
    "load_config",
    "parse_config",
    "parse_endpoint",
    "parse_remote",
]

#: Linux termios rates from 9600 up (B9600 .. B4000000)
BAUDRATES = (
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000, 921600,
    1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
)  # fmt: skip
MODELS = ("auto", "bg95", "generic", "bc25", "bg96", "rg500u")
#: pdp.auth -> the <authentication> value of AT+QICSGP
AUTH_MODES = {"none": 0, "pap": 1, "chap": 2, "pap_or_chap": 3}
#: pdp.ip_type -> the <context_type> value of AT+QICSGP
IP_TYPES = {"ipv4": 1, "ipv6": 2, "ipv4v6": 3}
POWER_BACKENDS = ("gpiod", "command", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
ENDPOINT_KINDS = ("unix", "tcp", "udp")
#: sizeof(sun_path) is 108 on Linux, including the terminating NUL
UNIX_PATH_MAX = 107
CONTEXT_ID_RANGE = (1, 16)
NAME_PATTERN = "[A-Za-z0-9_.-]{1,64}"
_NAME_RE = re.compile(NAME_PATTERN + r"\Z")
_MODE_RE = re.compile(r"0?[0-7]{3}\Z")
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")
_SHOW_MAX = 64


class ConfigError(ValueError):
    """One or more configuration problems; ``errors`` holds one line per problem."""

    def __init__(self, errors: str | list[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Endpoint:
    """A local address: ``unix:/path``, ``tcp:HOST:PORT`` or ``udp:HOST:PORT``.

    For unix endpoints ``path`` is set and ``host``/``port`` are None; for tcp/udp ``host`` is an
    IP literal in canonical form (IPv6 without brackets) or ``"localhost"``, and ``port`` is
    1..65535.  ``str(ep)`` gives back the canonical text form.
    """

    kind: Literal["unix", "tcp", "udp"]
    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"

    @property
    def is_unix(self) -> bool:
        return self.kind == "unix"

    @property
    def is_loopback(self) -> bool:
        """Unix sockets and loopback addresses (127.0.0.0/8, ::1, "localhost") are local."""
        return self.kind == "unix" or _is_loopback_host(self.host or "")

    @property
    def address(self) -> str | tuple[str, int]:
        """What ``socket.bind``/``connect`` take: the path, or ``(host, port)``."""
        if self.kind == "unix":
            return self.path or ""
        return (self.host or "", self.port or 0)


@dataclass(frozen=True)
class ModemConfig:
    port: str = ""  # "" only when emulating: the caller substitutes the emulator's pty
    baudrate: int = 115200
    rtscts: bool = False
    model: str = "auto"  # one of MODELS
    lock_dir: str = "/run/lock"
    health_interval: float = 10.0  # seconds (a hung idle module is noticed within ~15 s)
    health_timeout: float = 5.0  # seconds


@dataclass(frozen=True)
class PdpConfig:
    context_id: int = 1
    apn: str = "internet"
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)  # from pdp.password or pdp.password_file
    password_file: str = ""  # the resolved path it was read from, "" if none
    auth: str = "none"  # one of AUTH_MODES
    ip_type: str = "ipv4"  # one of IP_TYPES

    @property
    def auth_code(self) -> int:
        """<authentication> for AT+QICSGP: 0 none, 1 PAP, 2 CHAP, 3 PAP or CHAP."""
        return AUTH_MODES[self.auth]

    @property
    def context_type(self) -> int:
        """<context_type> for AT+QICSGP: 1 IPv4, 2 IPv6, 3 IPv4v6."""
        return IP_TYPES[self.ip_type]


@dataclass(frozen=True)
class SimConfig:
    pin: str = field(default="", repr=False)  # from sim.pin or the content of sim.pin_file ("" = none)
    pin_file: str = ""                        # the resolved path it was read from, "" if none


@dataclass(frozen=True)
class PowerConfig:
    backend: str = "none"  # one of POWER_BACKENDS
    chip: str = "/dev/gpiochip0"
    pwrkey: str | int = "MODEM_PWRKEY"  # gpiod line name or offset
    pwrkey_active_low: bool = False
    supply: str | int | None = None  # gpiod line enabling the supply (active = powered), None if absent
    supply_active_low: bool = False
    off: tuple[str, ...] = ()  # backend "command": argv
    on: tuple[str, ...] = ()
    pwrkey_command: tuple[str, ...] = ()
    pwrkey_seconds: float = 2.0
    supply_off_seconds: float = 12.0


@dataclass(frozen=True)
class SupervisorConfig:
    healthy_reset_seconds: float = 3600.0
    reboot_jitter: float = 0.1  # fraction 0..1
    ack_poll_interval: float = 5.0
    ack_poll_count: int = 24
    reconcile_interval: float = 10.0


@dataclass(frozen=True)
class ForwardConfig:
    name: str
    listen: Endpoint
    remote_host: str  # validated host name or IP literal (IPv6 without brackets)
    remote_port: int
    context_id: int = 1
    mode: int = 0o660  # unix listeners only
    group: str = ""  # unix listeners only; "" = leave the daemon's group
    gid: int | None = None  # group resolved at load time
    allow_non_loopback: bool = False

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
    name: str
    protocol: Literal["tcp", "udp"]  # tcp -> "TCP LISTENER", udp -> "UDP SERVICE"
    module_port: int
    target: Endpoint  # tcp: tcp:/unix:, udp: udp:
    context_id: int = 1

    @property
    def service_type(self) -> str:
        """The QIOPEN <service_type> for this listener."""
        return "TCP LISTENER" if self.protocol == "tcp" else "UDP SERVICE"


@dataclass(frozen=True)
class SocksConfig:
    listen: Endpoint = Endpoint("tcp", host="127.0.0.1", port=1080)
    mode: int = 0o660
    group: str = ""
    gid: int | None = None
    allow_non_loopback: bool = False
    handshake_timeout: float = 10.0
    max_clients: int = 64


@dataclass(frozen=True)
class ProxyConfig:
    queue_timeout: float = 30.0
    queue_limit: int = 64
    linger_seconds: float = 30.0
    unacked_window: int = 8192
    direct_push: bool = True
    keepalive_seconds: float = 120.0  # the module's TCP keepalive idle time; 0 = off


@dataclass(frozen=True)
class MetricsConfig:
    listen: Endpoint | None = Endpoint("tcp", host="127.0.0.1", port=9523)  # None = disabled
    allow_non_loopback: bool = False


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "/run/modemd/control.sock"  # "" = no control socket
    mode: int = 0o660
    group: str = ""
    gid: int | None = None


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"  # one of LOG_LEVELS


@dataclass(frozen=True)
class Config:
    modem: ModemConfig = field(default_factory=ModemConfig)
    pdp: PdpConfig = field(default_factory=PdpConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    forwards: tuple[ForwardConfig, ...] = ()
    listens: tuple[ListenConfig, ...] = ()
    socks: SocksConfig | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sim: SimConfig = field(default_factory=SimConfig)


# ------------------------------------------------------------------------------------ helpers


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > _SHOW_MAX:
        text = text[:_SHOW_MAX] + "..."
    return text


def _typename(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__  # dates and times


def _fmt_num(x: float) -> str:
    return repr(int(x)) if isinstance(x, float) and x.is_integer() else repr(x)


def _is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _split_host_port(text: str, example: str) -> tuple[str, str]:
    """Split ``host:port`` / ``[v6]:port``; raises ValueError with a message without key."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{_show(text)}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            raise ValueError(f"{_show(text)}: missing port (expected {example})")
        if not rest.startswith(":"):
            raise ValueError(f"{_show(text)}: expected ':PORT' after ']' (e.g. {example})")
        if ":" not in host:
            raise ValueError(f"{_show(text)}: brackets are only for IPv6 addresses")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{_show(text)}: missing port (expected {example})")
    if ":" in host:
        raise ValueError(f"{_show(text)}: write IPv6 addresses in brackets, e.g. [2001:db8::1]:443")
    return host, port


def _parse_port(port: str, text: str) -> int:
    if not _PORT_RE.match(port):
        raise ValueError(f"{_show(text)}: port {_show(port)} is not a number 1..65535")
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"{_show(text)}: port must be 1..65535, got {value}")
    return value


def parse_endpoint(
    text: str,
    key: str,
    *,
    kinds: tuple[str, ...] = ENDPOINT_KINDS,
    default_kind: str | None = None,
) -> Endpoint:
    """Parse ``unix:/abs/path``, ``tcp:HOST:PORT`` or ``udp:HOST:PORT`` (raises ConfigError).

    HOST must be an IP literal (IPv6 in brackets) or ``localhost``: local addresses are
    never resolved.  ``kinds`` limits the accepted kinds; with ``default_kind`` a text without
    a ``kind:`` prefix is read as that kind (``"127.0.0.1:9523"`` for the metrics listener).
    """
    if not isinstance(text, str):
        raise ConfigError(f"{key}: must be a string, got {_typename(text)}")
    allowed = " or ".join(f"{k}:" for k in kinds)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in ENDPOINT_KINDS:
        kind = prefix
    elif default_kind is not None:
        kind, rest = default_kind, text
    else:
        raise ConfigError(
            f"{key}: {_show(text)} must start with {allowed} "
            "(e.g. unix:/run/modemd/x.sock, tcp:127.0.0.1:1883)"
        )
    if kind not in kinds:
        raise ConfigError(f"{key}: {kind}: is not allowed here; use {allowed}")
    if kind == "unix":
        return Endpoint("unix", path=_check_unix_path(rest, key))
    example = f"{kind}:127.0.0.1:1883 or {kind}:[::1]:1883"
    try:
        host, port_text = _split_host_port(rest, example)
        port = _parse_port(port_text, text)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not host:
        raise ConfigError(f"{key}: {_show(text)}: missing host (e.g. {example})")
    if host.lower() == "localhost":
        return Endpoint(kind, host="localhost", port=port)  # type: ignore[arg-type]
    if "%" in host:
        raise ConfigError(f"{key}: {_show(text)}: IPv6 zone indexes (%...) are not supported")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{key}: {_show(host)} is not an IP address; local addresses must be IP literals "
            "or 'localhost' (host names are not resolved)"
        ) from None
    return Endpoint(kind, host=str(addr), port=port)  # type: ignore[arg-type]


def _check_unix_path(path: str, key: str) -> str:
    if not path:
        raise ConfigError(f"{key}: missing path after 'unix:' (e.g. unix:/run/modemd/x.sock)")
    if "\0" in path:
        raise ConfigError(f"{key}: the path contains a NUL byte")
    if not path.startswith("/"):
        raise ConfigError(f"{key}: {_show(path)} must be an absolute path")
    if path.endswith("/"):
        raise ConfigError(f"{key}: {_show(path)} names a directory, not a socket file")
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise ConfigError(
            f"{key}: {_show(path)} is {size} bytes; a unix socket path is at most "
            f"{UNIX_PATH_MAX} bytes"
        )
    return os.path.normpath(path)


def parse_remote(text: str, key: str) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port`` for a module-side connection (raises ConfigError).

    The host is checked with :func:`modemd.validate.check_hostname` (it goes into an AT
    command and is resolved by the module).
    """
    if not isinstance(text, str):
        raise ConfigError(f"{key}: must be a string, got {_typename(text)}")
    example = "broker.example.com:8883 or [2001:db8::1]:443"
    try:
        host, port_text = _split_host_port(text, example)
        port = _parse_port(port_text, text)
        host = check_hostname(host, key)
    except ValueError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(f"{key}: ") else f"{key}: {msg}") from None
    return host, port


def _overlaps(a: Endpoint, b: Endpoint) -> bool:
    """Would binding both fail (or silently share) on Linux with the default bindv6only=0?"""
    if a.kind == "unix" or b.kind == "unix":
        return a.kind == b.kind and a.path == b.path
    if a.kind != b.kind or a.port != b.port:
        return False
    return bool(_host_set(a.host or "") & _host_set(b.host or "")) or _wild(a, b) or _wild(b, a)


def _host_set(host: str) -> set[str]:
    return {"127.0.0.1", "::1"} if host == "localhost" else {host}


def _wild(a: Endpoint, b: Endpoint) -> bool:
    if a.host == "::":
        return True
    if a.host == "0.0.0.0":
        return b.host == "localhost" or "." in (b.host or "") or b.host == "::"
    return False


# ----------------------------------------------------------------------------------- reading


class _Table:
    """One TOML table: typed getters that record errors and return the default instead."""

    def __init__(
        self,
        errors: list[str],
        data: Any,
        path: str,
        known: tuple[str, ...],
        secret: tuple[str, ...] = (),
    ) -> None:
        self.errors = errors
        self.path = path
        self.secret = secret
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            where = "" if "[" in path else f" ([{path}])"
            errors.append(f"{path}: must be a table{where}, got {_typename(data)}")
            data = {}
        self.data: Mapping[str, Any] = data
        for k in data:
            if k not in known:
                self.err(k, "unknown key" + _suggest(k, known))

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def err(self, k: str, msg: str) -> None:
        self.errors.append(f"{self.key(k)}: {msg}")

    def has(self, k: str) -> bool:
        return k in self.data

    def _got(self, k: str, value: Any) -> str:
        if k in self.secret:
            return f"got {_typename(value)}"
        return f"got {_typename(value)} {_show(value)}"

    def string(
        self,
        k: str,
        default: str,
        *,
        choices: tuple[str, ...] | None = None,
        check: Callable[[str], Any] | None = None,
    ) -> str:
        if k not in self.data:
            return default
        value = self.data[k]
        if not isinstance(value, str):
            self.err(k, f"must be a string, {self._got(k, value)}")
            return default
        if choices is not None and value not in choices:
            got = "" if k in self.secret else f", got {_show(value)}"
            self.err(k, f"must be one of {', '.join(choices)}{got}")
            return default
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                msg = str(exc)
                prefix = f"{self.key(k)}: "
                self.errors.append(msg if msg.startswith(prefix) else prefix + msg)
                return default
        return value

    def boolean(self, k: str, default: bool) -> bool:
        if k not in self.data:
            return default
        value = self.data[k]
        if not isinstance(value, bool):
            self.err(k, f"must be true or false, {self._got(k, value)}")
            return default
        return value

    def integer(
        self,
        k: str,
        default: int,
        lo: int | None = None,
        hi: int | None = None,
        *,
        choices: tuple[int, ...] | None = None,
    ) -> int:
        if k not in self.data:
            return default
        value = self.data[k]
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(k, f"must be an integer, {self._got(k, value)}")
            return default
        if choices is not None and value not in choices:
            self.err(k, f"must be one of {', '.join(map(str, choices))}, got {value}")
            return default
        if not _in_range(value, lo, hi):
            self.err(k, f"{_range_text(lo, hi)}, got {value}")
            return default
        return value

    def number(
        self,
        k: str,
        default: float,
        lo: float | None = None,
        hi: float | None = None,
        *,
        lo_open: bool = False,
    ) -> float:
        """A float; TOML integers are accepted.  ``lo_open``: strictly greater than lo."""
        if k not in self.data:
            return default
        value = self.data[k]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.err(k, f"must be a number, {self._got(k, value)}")
            return default
        try:
            value = float(value)
        except OverflowError:  # a TOML integer beyond the float range
            self.err(k, f"{_range_text(lo, hi)}, got {_show(value)}")
            return default
        if not math.isfinite(value):
            self.err(k, f"must be a finite number, got {value}")
            return default
        if lo_open and lo is not None and value <= lo:
            upper = f" and at most {_fmt_num(hi)}" if hi is not None else ""
            self.err(k, f"must be greater than {_fmt_num(lo)}{upper}, got {_fmt_num(value)}")
            return default
        if not _in_range(value, lo, hi):
            self.err(k, f"{_range_text(lo, hi)}, got {_fmt_num(value)}")
            return default
        return value

    def argv(self, k: str, value: Any = None) -> tuple[str, ...]:
        if value is None:
            if k not in self.data:
                return ()
            value = self.data[k]
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            self.err(
                k,
                f"must be an array of strings (a command's argv, e.g. "
                f'["/usr/local/bin/modem-power", "off"]), {self._got(k, value)}',
            )
            return ()
        if value and not value[0]:
            self.err(k, "the program name (first element) must not be empty")
            return ()
        if any("\0" in a for a in value):
            self.err(k, "arguments must not contain NUL bytes")
            return ()
        return tuple(value)

    def endpoint(self, k: str, default: str | None, **kw: Any) -> Endpoint | None:
        if k not in self.data:
            if default is None:
                self.err(k, "required")
                return None
            text = default
        else:
            text = self.data[k]
        try:
            return parse_endpoint(text, self.key(k), **kw)
        except ConfigError as exc:
            self.errors.extend(exc.errors)
            return None

    def mode(self, k: str, default: int = 0o660) -> int:
        if k not in self.data:
            return default
        value = self.data[k]
        if not isinstance(value, str):
            self.err(
                k,
                f'must be an octal string such as "0660" (a TOML integer would be read as '
                f"decimal), {self._got(k, value)}",
            )
            return default
        if not _MODE_RE.match(value):
            self.err(k, f'must be an octal permission string such as "0660", got {_show(value)}')
            return default
        return int(value, 8)

    def group(self, k: str) -> tuple[str, int | None]:
        """A group name (or numeric gid) that must exist here; "" = none."""
        name = self.string(k, "")
        if not name:
            return "", None
        try:
            if name.isdigit():
                return name, grp.getgrgid(int(name)).gr_gid
            return name, grp.getgrnam(name).gr_gid
        except (KeyError, OverflowError, ValueError):  # ValueError: "²".isdigit(), NUL bytes
            self.err(k, f"group {_show(name)} does not exist on this system")
            return "", None


def _in_range(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"must be between {_fmt_num(lo)} and {_fmt_num(hi)}"
    if lo is not None:
        return f"must be at least {_fmt_num(lo)}"
    return f"must be at most {_fmt_num(hi)}"  # type: ignore[arg-type]


def _suggest(k: str, known: tuple[str, ...]) -> str:
    match = difflib.get_close_matches(k, known, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _check_abs_path(value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"{_show(value)} must be an absolute path")
    if "\0" in value:
        raise ValueError("the path contains a NUL byte")


MEMORY_DEVICES_MAJOR = 1  # /dev/null, /dev/zero, /dev/urandom ...: character devices, never a tty


def _check_serial_port(value: str) -> None:
    """A port that exists must be a character device that can be a tty (a missing one is fine:
    a USB module's port appears when the module is powered)."""
    _check_abs_path(value)
    try:
        st = os.stat(value)
    except OSError:
        return
    fix = "name the module's AT port, e.g. /dev/ttyUSB2 or /dev/modemd-at"
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"{_show(value)} is a directory, not a serial port: {fix}")
    if stat.S_ISREG(st.st_mode):
        raise ValueError(f"{_show(value)} is a regular file, not a serial port: {fix}")
    if not stat.S_ISCHR(st.st_mode):
        raise ValueError(f"{_show(value)} is not a character device: {fix}")
    if os.major(st.st_rdev) == MEMORY_DEVICES_MAJOR:
        raise ValueError(f"{_show(value)} is a memory device, not a serial port: {fix}")


def _check_name(value: str) -> None:
    if not _NAME_RE.match(value):
        raise ValueError(f"{_show(value)} must match {NAME_PATTERN}")


# ---------------------------------------------------------------------------------- sections

_TOP = (
    "modem", "pdp", "power", "supervisor", "forward", "listen", "socks", "proxy", "metrics",
    "control", "log", "sim",
)  # fmt: skip


def _modem(errors: list[str], data: Any, emulate: bool) -> ModemConfig:
    t = _Table(
        errors,
        data,
        "modem",
        ("port", "baudrate", "rtscts", "model", "lock_dir", "health_interval", "health_timeout"),
    )

    def check_port(value: str) -> None:
        if value or not emulate:
            _check_serial_port(value)

    port = t.string("port", "", check=check_port)
    if not t.has("port") and not emulate:
        t.err(
            "port",
            "required: the module's AT serial port, e.g. /dev/ttyUSB2 or a udev symlink "
            "such as /dev/modemd-at",
        )
    baudrate = t.integer("baudrate", 115200, choices=BAUDRATES)
    rtscts = t.boolean("rtscts", False)
    model = t.string("model", "auto", choices=MODELS)
    lock_dir = t.string("lock_dir", "/run/lock", check=_check_abs_path)
    interval = t.number("health_interval", 10.0, 1, 3600)
    timeout = t.number("health_timeout", 5.0, 0, 300, lo_open=True)
    if timeout > interval:
        t.err(
            "health_timeout",
            f"must not exceed modem.health_interval ({_fmt_num(interval)}), "
            f"got {_fmt_num(timeout)}",
        )
    return ModemConfig(
        port=port,
        baudrate=baudrate,
        rtscts=rtscts,
        model=model,
        lock_dir=lock_dir,
        health_interval=interval,
        health_timeout=timeout,
    )


def _pdp(errors: list[str], data: Any, base_dir: Path) -> PdpConfig:
    t = _Table(
        errors,
        data,
        "pdp",
        ("context_id", "apn", "username", "password", "password_file", "auth", "ip_type"),
        secret=("username", "password"),
    )
    context_id = t.integer("context_id", 1, *CONTEXT_ID_RANGE)
    apn = t.string("apn", "internet", check=lambda s: check_apn(s, "pdp.apn"))
    username = t.string("username", "", check=lambda s: check_credential(s, "pdp.username"))
    password = t.string("password", "", check=lambda s: check_credential(s, "pdp.password"))
    password_file = t.string("password_file", "")
    if password_file:
        if password or (t.has("password") and t.data["password"] != ""):
            t.err(
                "password_file",
                "pdp.password and pdp.password_file are mutually exclusive; remove one",
            )
        else:
            path = base_dir / password_file
            password_file = str(path)
            password = _read_password(t, path)
    auth = t.string("auth", "none", choices=tuple(AUTH_MODES))
    if t.data.get("auth", "none") == "none":
        for k, v in (("username", username), ("password", password)):
            if v:
                key = "password_file" if k == "password" and password_file else k
                t.err(
                    key,
                    'is set but pdp.auth = "none", so it would never be sent; set pdp.auth '
                    'to "pap", "chap" or "pap_or_chap"',
                )
    return PdpConfig(
        context_id=context_id,
        apn=apn,
        username=username,
        password=password,
        password_file=password_file,
        auth=auth,
        ip_type=t.string("ip_type", "ipv4", choices=tuple(IP_TYPES)),
    )


def _read_password(t: _Table, path: Path) -> str:
    if "\0" in str(path):
        t.err("password_file", "the path contains a NUL byte")
        return ""
    try:
        with path.open("rb") as f:  # bounded: password_file = "/dev/zero" must not eat memory
            raw = f.read(CREDENTIAL_MAX + 3)
    except FileNotFoundError:
        t.err("password_file", f"cannot read {str(path)!r}: no such file")
        return ""
    except PermissionError:
        t.err(
            "password_file",
            f"cannot read {str(path)!r}: permission denied (the daemon's user must be able "
            "to read it)",
        )
        return ""
    except OSError as exc:
        t.err("password_file", f"cannot read {str(path)!r}: {exc.strerror or exc}")
        return ""
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    try:
        return check_credential(raw, "pdp.password_file")
    except ValueError as exc:
        msg = str(exc).removeprefix("pdp.password_file: ")
        t.err("password_file", f"the password in {str(path)!r} {msg}")
        return ""


PIN_FILE_MAX = 64  # bytes read from sim.pin_file (a PIN is 4-8 digits; whitespace around it)


def _check_pin(value: str) -> str:
    """4 to 8 ASCII digits (27.007 +CPIN); the message never shows the value."""
    if not (4 <= len(value) <= 8 and value.isascii() and value.isdigit()):
        raise ValueError("must be 4 to 8 digits (0-9)")
    return value


def _sim(errors: list[str], data: Any, base_dir: Path) -> SimConfig:
    """[sim]: the SIM's PIN, inline or from a file; a secret like pdp.password."""
    t = _Table(errors, data, "sim", ("pin", "pin_file"), secret=("pin",))
    pin = t.string("pin", "", check=lambda s: s == "" or _check_pin(s))
    pin_file = t.string("pin_file", "")
    if pin_file:
        if t.has("pin") and t.data["pin"] != "":
            t.err("pin_file", "sim.pin and sim.pin_file are mutually exclusive; remove one")
            return SimConfig()
        path = base_dir / pin_file
        return SimConfig(pin=_read_pin(t, path), pin_file=str(path))
    return SimConfig(pin=pin)


def _read_pin(t: _Table, path: Path) -> str:
    if "\0" in str(path):
        t.err("pin_file", "the path contains a NUL byte")
        return ""
    try:
        with path.open("rb") as f:  # bounded: pin_file = "/dev/zero" must not eat memory
            raw = f.read(PIN_FILE_MAX + 1)
    except FileNotFoundError:
        t.err("pin_file", f"cannot read {str(path)!r}: no such file")
        return ""
    except PermissionError:
        t.err("pin_file", f"cannot read {str(path)!r}: permission denied (the daemon's user "
                          "must be able to read it)")
        return ""
    except OSError as exc:
        t.err("pin_file", f"cannot read {str(path)!r}: {exc.strerror or exc}")
        return ""
    text = raw.decode("ascii", "replace").strip() if len(raw) <= PIN_FILE_MAX else ""
    try:
        return _check_pin(text)
    except ValueError as exc:
        t.err("pin_file", f"the PIN in {str(path)!r} {exc}")
        return ""


def _line(t: _Table, k: str, default: str | int | None) -> str | int | None:
    """A gpiod line: a name (string) or an offset (integer >= 0)."""
    if k not in t.data:
        return default
    value = t.data[k]
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value == "" and default is None:
        return None
    t.err(k, f"must be a GPIO line name or an offset >= 0, got {_typename(value)} {_show(value)}")
    return default


def _power(errors: list[str], data: Any) -> PowerConfig:
    """[power].  Keys of the backend not selected are ignored (so one file can carry both
    sets while ``backend = "none"``), except where they clearly contradict the choice."""
    keys = (
        "backend", "chip", "pwrkey", "pwrkey_active_low", "supply", "supply_active_low", "off",
        "on", "pwrkey_command", "pwrkey_seconds", "supply_off_seconds",
    )  # fmt: skip
    t = _Table(errors, data, "power", keys)
    backend = t.string("backend", "none", choices=POWER_BACKENDS)
    pwrkey: str | int | None = "MODEM_PWRKEY"
    n_errors = len(errors)
    pwrkey_command = t.argv("pwrkey_command")
    pwrkey_raw = t.data.get("pwrkey")
    if isinstance(pwrkey_raw, list):
        if backend == "gpiod":
            t.err(
                "pwrkey",
                'an array (a command argv) is only valid with power.backend = "command"; '
                "for gpiod give a line name or an offset",
            )
        elif pwrkey_command:
            t.err("pwrkey", "give the pwrkey command once: pwrkey or pwrkey_command, not both")
        else:
            pwrkey_command = t.argv("pwrkey", pwrkey_raw)
    elif backend == "command" and t.has("pwrkey") and not pwrkey_command:
        t.err(
            "pwrkey",
            'with backend = "command" give an argv array, e.g. ["/usr/local/bin/pwrkey"], '
            f"got {_typename(pwrkey_raw)} {_show(pwrkey_raw)}",
        )
    else:
        pwrkey = _line(t, "pwrkey", "MODEM_PWRKEY")
    off = t.argv("off")
    on = t.argv("on")
    commands_ok = len(errors) == n_errors
    supply = _line(t, "supply", None)
    chip = t.string("chip", "/dev/gpiochip0")
    if not chip.startswith("/"):
        t.err("chip", f"must be a device path such as /dev/gpiochip0, got {_show(chip)}")
    if backend == "gpiod":
        for k, v in (("off", off), ("on", on), ("pwrkey_command", pwrkey_command)):
            if v:
                t.err(k, 'only used with power.backend = "command" (backend is "gpiod")')
    if backend == "command" and commands_ok:
        if bool(off) != bool(on):
            t.err("on" if off else "off", "power.off and power.on must be given together")
        if not (pwrkey_command or off or on):
            t.err(
                "backend",
                '"command" needs pwrkey = [...] (or pwrkey_command), and/or off = [...] '
                "together with on = [...]",
            )
    return PowerConfig(
        backend=backend,
        chip=chip,
        pwrkey=pwrkey if pwrkey is not None else "MODEM_PWRKEY",
        pwrkey_active_low=t.boolean("pwrkey_active_low", False),
        supply=supply,
        supply_active_low=t.boolean("supply_active_low", False),
        off=off,
        on=on,
        pwrkey_command=pwrkey_command,
        pwrkey_seconds=t.number("pwrkey_seconds", 2.0, 0, 30, lo_open=True),
        supply_off_seconds=t.number("supply_off_seconds", 12.0, 0, 600),
    )


def _supervisor(errors: list[str], data: Any) -> SupervisorConfig:
    t = _Table(
        errors,
        data,
        "supervisor",
        (
            "healthy_reset_seconds", "reboot_jitter", "ack_poll_interval", "ack_poll_count",
            "reconcile_interval",
        ),
    )  # fmt: skip
    return SupervisorConfig(
        healthy_reset_seconds=t.number("healthy_reset_seconds", 3600.0, 0, 7 * 86400, lo_open=True),
        reboot_jitter=t.number("reboot_jitter", 0.1, 0, 1),
        ack_poll_interval=t.number("ack_poll_interval", 5.0, 0, 600, lo_open=True),
        ack_poll_count=t.integer("ack_poll_count", 24, 1, 10000),
        reconcile_interval=t.number("reconcile_interval", 10.0, 0, 3600, lo_open=True),
    )


def _array(errors: list[str], data: Any, name: str) -> list[Any]:
    if data is None:
        return []
    if isinstance(data, Mapping):
        errors.append(f"{name}: must be an array of tables: write [[{name}]], not [{name}]")
        return []
    if not isinstance(data, list):
        errors.append(f"{name}: must be an array of tables ([[{name}]]), got {_typename(data)}")
        return []
    return data


def _context_id(t: _Table, pdp: PdpConfig) -> int:
    cid = t.integer("context_id", pdp.context_id, *CONTEXT_ID_RANGE)
    if cid != pdp.context_id:
        t.err(
            "context_id",
            f"context {cid} is never activated: [pdp] configures context {pdp.context_id}",
        )
    return cid


def _unix_only(t: _Table, ep: Endpoint | None, keys: tuple[str, ...] = ("mode", "group")) -> None:
    if ep is not None and ep.kind != "unix":
        for k in keys:
            if t.has(k):
                t.err(k, "only valid for unix: listen addresses")


def _loopback(t: _Table, ep: Endpoint | None, listen_key: str = "listen") -> bool:
    allow = t.boolean("allow_non_loopback", False)
    if ep is None:
        return allow
    if ep.kind == "unix":
        if allow:
            t.err("allow_non_loopback", "only meaningful for tcp:/udp: listen addresses")
        return allow
    if not ep.is_loopback and not allow:
        t.err(
            listen_key,
            f"{ep.host} is not a loopback address; set {t.key('allow_non_loopback')} = true "
            "to accept connections from the network",
        )
    return allow


def _forward(errors: list[str], data: Any, i: int, pdp: PdpConfig) -> ForwardConfig | None:
    keys = ("name", "listen", "remote", "context_id", "mode", "group", "allow_non_loopback")
    t = _Table(errors, data, f"forward[{i}]", keys)
    if not isinstance(data, Mapping):
        return None
    name = _required_name(t)
    listen = t.endpoint("listen", None)
    remote_host, remote_port = "", 0
    if not t.has("remote"):
        t.err("remote", "required: HOST:PORT the module connects to, e.g. broker.example.com:8883")
    else:
        try:
            remote_host, remote_port = parse_remote(t.data["remote"], t.key("remote"))
        except ConfigError as exc:
            errors.extend(exc.errors)
    context_id = _context_id(t, pdp)
    _unix_only(t, listen)
    mode = t.mode("mode")
    group, gid = t.group("group")
    allow = _loopback(t, listen)
    if listen is None or not name:
        return None
    return ForwardConfig(
        name=name,
        listen=listen,
        remote_host=remote_host,
        remote_port=remote_port,
        context_id=context_id,
        mode=mode,
        group=group,
        gid=gid,
        allow_non_loopback=allow,
    )


def _required_name(t: _Table) -> str:
    if not t.has("name"):
        t.err("name", f"required: a unique name matching {NAME_PATTERN}")
        return ""
    return t.string("name", "", check=_check_name)


def _listen(errors: list[str], data: Any, i: int, pdp: PdpConfig) -> ListenConfig | None:
    t = _Table(
        errors, data, f"listen[{i}]", ("name", "protocol", "module_port", "target", "context_id")
    )
    if not isinstance(data, Mapping):
        return None
    name = _required_name(t)
    protocol = t.string("protocol", "tcp", choices=("tcp", "udp"))
    if not t.has("module_port"):
        t.err("module_port", "required: the port the module listens on, 1..65535")
    module_port = t.integer("module_port", 0, 1, 65535)
    kinds = ("tcp", "unix") if protocol == "tcp" else ("udp",)
    target = t.endpoint("target", None)
    if target is not None and target.kind not in kinds:
        allowed = " or ".join(f"{k}:" for k in kinds)
        t.err(
            "target", f'a {target.kind}: target does not fit protocol = "{protocol}"; use {allowed}'
        )
        target = None
    context_id = _context_id(t, pdp)
    if target is None or not name or not module_port:
        return None
    return ListenConfig(
        name=name,
        protocol=protocol,  # type: ignore[arg-type]
        module_port=module_port,
        target=target,
        context_id=context_id,
    )


def _socks(errors: list[str], data: Any) -> SocksConfig | None:
    if data is None:
        return None
    keys = (
        "listen", "mode", "group", "allow_non_loopback", "handshake_timeout", "max_clients",
    )  # fmt: skip
    t = _Table(errors, data, "socks", keys)
    listen = t.endpoint("listen", "tcp:127.0.0.1:1080", kinds=("tcp", "unix"))
    _unix_only(t, listen)
    group, gid = t.group("group")
    return SocksConfig(
        listen=listen or SocksConfig.listen,
        mode=t.mode("mode"),
        group=group,
        gid=gid,
        allow_non_loopback=_loopback(t, listen),
        handshake_timeout=t.number("handshake_timeout", 10.0, 0, 600, lo_open=True),
        max_clients=t.integer("max_clients", 64, 1, 65535),
    )


def _proxy(errors: list[str], data: Any) -> ProxyConfig:
    t = _Table(
        errors,
        data,
        "proxy",
        ("queue_timeout", "queue_limit", "linger_seconds", "unacked_window", "direct_push",
         "keepalive_seconds"),
    )
    return ProxyConfig(
        queue_timeout=t.number("queue_timeout", 30.0, 0, 3600),
        queue_limit=t.integer("queue_limit", 64, 0, 65535),
        linger_seconds=t.number("linger_seconds", 30.0, 0, 3600),
        unacked_window=t.integer("unacked_window", 8192, 1, 1 << 20),
        direct_push=t.boolean("direct_push", True),
        keepalive_seconds=t.number("keepalive_seconds", 120.0, 0, 36000),
    )


def _metrics(errors: list[str], data: Any) -> MetricsConfig:
    t = _Table(errors, data, "metrics", ("listen", "allow_non_loopback"))
    if t.data.get("listen") == "":
        return MetricsConfig(listen=None, allow_non_loopback=t.boolean("allow_non_loopback", False))
    listen = t.endpoint("listen", "127.0.0.1:9523", kinds=("tcp",), default_kind="tcp")
    return MetricsConfig(listen=listen, allow_non_loopback=_loopback(t, listen))


def _control(errors: list[str], data: Any, instance: str = "") -> ControlConfig:
    t = _Table(errors, data, "control", ("socket", "mode", "group"))
    sock = t.string("socket", control_socket(instance))
    if sock:
        try:
            sock = _check_unix_path(sock.removeprefix("unix:"), t.key("socket"))
        except ConfigError as exc:
            errors.extend(exc.errors)
    group, gid = t.group("group")
    return ControlConfig(socket=sock, mode=t.mode("mode"), group=group, gid=gid)


def _log(errors: list[str], data: Any) -> LogConfig:
    t = _Table(errors, data, "log", ("level",))
    return LogConfig(level=t.string("level", "info", choices=LOG_LEVELS))


def _cross_checks(
    errors: list[str],
    cfg: Config,
    forwards: list[ForwardConfig | None],
    listens: list[ListenConfig | None],
) -> None:
    """Checks across sections; ``forwards``/``listens`` keep None for invalid entries so that
    indices in key paths stay those of the file."""
    names: dict[str, str] = {}
    items: list[tuple[str, ForwardConfig | ListenConfig | None]] = [
        *((f"forward[{i}].name", f) for i, f in enumerate(forwards)),
        *((f"listen[{i}].name", x) for i, x in enumerate(listens)),
    ]
    for key, item in items:
        if item is not None:
            if item.name in names:
                errors.append(f"{key}: {item.name!r} is already used by {names[item.name]}")
            else:
                names[item.name] = key

    local: list[tuple[str, Endpoint]] = []
    for i, fwd in enumerate(forwards):
        if fwd is not None:
            local.append((f"forward[{i}].listen", fwd.listen))
    if cfg.socks is not None:
        local.append(("socks.listen", cfg.socks.listen))
    if cfg.metrics.listen is not None:
        local.append(("metrics.listen", cfg.metrics.listen))
    if cfg.control.socket:
        local.append(("control.socket", Endpoint("unix", path=cfg.control.socket)))
    for j, (key, ep) in enumerate(local):
        for other_key, other in local[:j]:
            if _overlaps(ep, other):
                how = "is already used by" if ep == other else "overlaps"
                errors.append(f"{key}: {str(ep)!r} {how} {other_key} ({other})")
                break

    ports: dict[tuple[str, int], str] = {}
    for i, lst in enumerate(listens):
        if lst is None:
            continue
        slot = (lst.protocol, lst.module_port)
        key = f"listen[{i}].module_port"
        if slot in ports:
            errors.append(
                f"{key}: {lst.protocol} port {lst.module_port} is already used by {ports[slot]}"
            )
        else:
            ports[slot] = key


def _build(
    data: Mapping[str, Any], errors: list[str], base_dir: Path, emulate: bool, instance: str = "",
) -> Config:
    for k in data:
        if k not in _TOP:
            what = "section" if isinstance(data[k], (Mapping, list)) else "key"
            errors.append(f"{k}: unknown {what}" + _suggest(k, _TOP))
    modem = _modem(errors, data.get("modem"), emulate)
    pdp = _pdp(errors, data.get("pdp"), base_dir)
    power = _power(errors, data.get("power"))
    supervisor = _supervisor(errors, data.get("supervisor"))
    forwards = [
        _forward(errors, item, i, pdp)
        for i, item in enumerate(_array(errors, data.get("forward"), "forward"))
    ]
    listens = [
        _listen(errors, item, i, pdp)
        for i, item in enumerate(_array(errors, data.get("listen"), "listen"))
    ]
    cfg = Config(
        modem=modem,
        pdp=pdp,
        power=power,
        supervisor=supervisor,
        forwards=tuple(f for f in forwards if f is not None),
        listens=tuple(x for x in listens if x is not None),
        socks=_socks(errors, data.get("socks")),
        proxy=_proxy(errors, data.get("proxy")),
        metrics=_metrics(errors, data.get("metrics")),
        control=_control(errors, data.get("control"), instance),
        log=_log(errors, data.get("log")),
        sim=_sim(errors, data.get("sim"), base_dir),
    )
    _cross_checks(errors, cfg, forwards, listens)
    return cfg


# --------------------------------------------------------------------------------- entry points


def _loads(text: str | bytes, source: str) -> dict[str, Any]:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{source}: not valid UTF-8 (byte offset {exc.start}); save the file as UTF-8"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid TOML: {exc}; fix the file at that line and column "
            "(see config/modemd.toml for the expected layout)"
        ) from None
    except RecursionError:  # tomllib recurses once per nested array / inline table
        raise ConfigError(f"{source}: invalid TOML: arrays or inline tables nested too deeply") from None


def parse_config(
    data: Mapping[str, Any] | str | bytes,
    base_dir: str | os.PathLike[str] | None = None,
    *,
    emulate: bool = False,
    source: str = "<config>",
    instance: str = "",
) -> Config:
    """Build a :class:`Config` from a parsed TOML mapping or TOML text.

    Raises :class:`ConfigError` listing every problem.  ``base_dir`` anchors relative file
    names (``pdp.password_file``); ``emulate`` makes ``modem.port`` optional; ``source``
    names the text in TOML syntax errors; ``instance`` (modemd@NAME) moves the default control
    socket to /run/modemd/NAME/control.sock.
    """
    if isinstance(data, (str, bytes)):
        data = _loads(data, source)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the configuration must be a table, got {_typename(data)}")
    errors: list[str] = []
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    cfg = _build(data, errors, base, emulate, instance)
    if errors:
        raise ConfigError(errors)
    return cfg


def load_config(
    path: str | os.PathLike[str], *, emulate: bool = False, instance: str = ""
) -> Config:
    """Read and validate a TOML configuration file (raises :class:`ConfigError`)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such file; create it (config/modemd.toml in the source tree is a "
            "commented example) or pass another path with --config"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; give the path of the TOML file") from None
    except PermissionError:
        raise ConfigError(
            f"{p}: permission denied; make it readable by the daemon's user (or run as root)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror or exc}") from None
    data = _loads(raw, str(p))
    return parse_config(data, base_dir=p.parent, emulate=emulate, source=str(p), instance=instance)


def check_config(path: str | os.PathLike[str], *, emulate: bool = False) -> list[str]:
    """All problems of a configuration file, one line each; ``[]`` when it is valid."""
    try:
        load_config(path, emulate=emulate)
    except ConfigError as exc:
        return exc.errors
    return []
