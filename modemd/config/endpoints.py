"""Local endpoints (``unix:``/``tcp:``/``udp:``) and module-side remotes (``host:port``).

``parse_endpoint`` and ``parse_remote`` raise :class:`ConfigError` whose lines carry the key path
they were given; ``overlaps`` tells whether two listeners would collide when bound.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Literal

from modemd.validate import check_hostname

from .errors import ConfigError, show, typename

ENDPOINT_KINDS = ("unix", "tcp", "udp")
#: sizeof(sun_path) is 108 on Linux, including the terminating NUL
UNIX_PATH_MAX = 107
_PORT_RE = re.compile(r"[0-9]{1,5}\Z")


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
            raise ValueError(f"{show(text)}: missing ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            raise ValueError(f"{show(text)}: missing port (expected {example})")
        if not rest.startswith(":"):
            raise ValueError(f"{show(text)}: expected ':PORT' after ']' (e.g. {example})")
        if ":" not in host:
            raise ValueError(f"{show(text)}: brackets are only for IPv6 addresses")
        return host, rest[1:]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError(f"{show(text)}: missing port (expected {example})")
    if ":" in host:
        raise ValueError(f"{show(text)}: write IPv6 addresses in brackets, e.g. [2001:db8::1]:443")
    return host, port


def _parse_port(port: str, text: str) -> int:
    if not _PORT_RE.match(port):
        raise ValueError(f"{show(text)}: port {show(port)} is not a number 1..65535")
    value = int(port)
    if not 1 <= value <= 65535:
        raise ValueError(f"{show(text)}: port must be 1..65535, got {value}")
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
        raise ConfigError(f"{key}: must be a string, got {typename(text)}")
    allowed = " or ".join(f"{k}:" for k in kinds)
    prefix, sep, rest = text.partition(":")
    if sep and prefix in ENDPOINT_KINDS:
        kind = prefix
    elif default_kind is not None:
        kind, rest = default_kind, text
    else:
        raise ConfigError(
            f"{key}: {show(text)} must start with {allowed} "
            "(e.g. unix:/run/modemd/x.sock, tcp:127.0.0.1:1883)"
        )
    if kind not in kinds:
        raise ConfigError(f"{key}: {kind}: is not allowed here; use {allowed}")
    if kind == "unix":
        return Endpoint("unix", path=check_unix_path(rest, key))
    example = f"{kind}:127.0.0.1:1883 or {kind}:[::1]:1883"
    try:
        host, port_text = _split_host_port(rest, example)
        port = _parse_port(port_text, text)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not host:
        raise ConfigError(f"{key}: {show(text)}: missing host (e.g. {example})")
    if host.lower() == "localhost":
        return Endpoint(kind, host="localhost", port=port)  # type: ignore[arg-type]
    if "%" in host:
        raise ConfigError(f"{key}: {show(text)}: IPv6 zone indexes (%...) are not supported")
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{key}: {show(host)} is not an IP address; local addresses must be IP literals "
            "or 'localhost' (host names are not resolved)"
        ) from None
    return Endpoint(kind, host=str(addr), port=port)  # type: ignore[arg-type]


def check_unix_path(path: str, key: str) -> str:
    if not path:
        raise ConfigError(f"{key}: missing path after 'unix:' (e.g. unix:/run/modemd/x.sock)")
    if "\0" in path:
        raise ConfigError(f"{key}: the path contains a NUL byte")
    if not path.startswith("/"):
        raise ConfigError(f"{key}: {show(path)} must be an absolute path")
    if path.endswith("/"):
        raise ConfigError(f"{key}: {show(path)} names a directory, not a socket file")
    size = len(os.fsencode(path))
    if size > UNIX_PATH_MAX:
        raise ConfigError(
            f"{key}: {show(path)} is {size} bytes; a unix socket path is at most "
            f"{UNIX_PATH_MAX} bytes"
        )
    return os.path.normpath(path)


def parse_remote(text: str, key: str) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port`` for a module-side connection (raises ConfigError).

    The host is checked with :func:`modemd.validate.check_hostname` (it goes into an AT
    command and is resolved by the module).
    """
    if not isinstance(text, str):
        raise ConfigError(f"{key}: must be a string, got {typename(text)}")
    example = "broker.example.com:8883 or [2001:db8::1]:443"
    try:
        host, port_text = _split_host_port(text, example)
        port = _parse_port(port_text, text)
        host = check_hostname(host, key)
    except ValueError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(f"{key}: ") else f"{key}: {msg}") from None
    return host, port


def overlaps(a: Endpoint, b: Endpoint) -> bool:
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
