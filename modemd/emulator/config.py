"""Emulator configuration (plain data, validated on construction)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

DEFAULT_HOSTS: dict[str, str] = {"localhost": "127.0.0.1"}


class ConfigError(ValueError):
    """A user-caused configuration error (one clear line)."""


def is_loopback(ip: str) -> bool:
    """True if `ip` is an IP literal inside 127.0.0.0/8 or ::1."""
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass
class EmulatorConfig:
    """Knobs of one emulated module.

    family       -- module family: "bg96" (default), "bg95", "generic", "bc25", "rg500u"
    baud         -- line rate in bit/s (10 bits per byte); 0 = unlimited
    turnaround   -- seconds between a command's echo and its response
    qiact_delay  -- seconds AT+QIACT blocks before answering OK
    boot_delay   -- seconds from power-on to RDY
    hosts        -- the emulator's whole DNS: name -> loopback address (localhost is always there)
    rx_buffer    -- bytes the module buffers per socket before it stops reading the real socket
    tx_buffer    -- bytes the module accepts per socket before QISEND answers SEND FAIL
    power_on     -- boot at start (False: silent until power_on()/pwrkey)
    control      -- path of a unix control socket to serve (None: none)
    sim_ready    -- a SIM card is inserted
    sim_locked   -- the SIM's PIN lock is on: it asks for sim_pin at every power-on
    sim_pin      -- the SIM's PIN (4-8 digits); sim_puk its PUK (8 digits)
    registered   -- network registration (stat 1) after boot
    qideact_delay-- seconds AT+QIDEACT blocks
    ping_rtt     -- simulated round-trip time of AT+QPING replies to loopback hosts
    sock_sndbuf  -- SO_SNDBUF of the real sockets (0 = OS default); small values make unacked bytes visible
    sock_rcvbuf  -- SO_RCVBUF of the real sockets (0 = OS default)
    """

    family: str = "bg96"
    baud: int = 0
    turnaround: float = 0.0
    qiact_delay: float = 0.5
    boot_delay: float = 0.2
    hosts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_HOSTS))
    rx_buffer: int = 64 * 1024
    tx_buffer: int = 16 * 1024
    power_on: bool = True
    control: str | None = None
    sim_ready: bool = True
    sim_locked: bool = False
    sim_pin: str = "1234"
    sim_puk: str = "12345678"
    registered: bool = True
    qideact_delay: float = 0.0
    ping_rtt: float = 0.02
    sock_sndbuf: int = 0
    sock_rcvbuf: int = 0

    def __post_init__(self) -> None:
        from .families import FAMILIES

        if self.family not in FAMILIES:
            raise ConfigError(
                f"unknown module family {self.family!r} (known: {', '.join(sorted(FAMILIES))})"
            )
        if not isinstance(self.baud, int) or self.baud < 0:
            raise ConfigError(f"baud must be an integer >= 0, got {self.baud!r}")
        for name in ("turnaround", "qiact_delay", "boot_delay", "qideact_delay", "ping_rtt"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("rx_buffer", "tx_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("sock_sndbuf", "sock_rcvbuf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        self.hosts = {**DEFAULT_HOSTS, **check_hosts(self.hosts)}
        from .sim import check_code

        try:
            check_code("sim_pin", self.sim_pin, 4, 8)
            check_code("sim_puk", self.sim_puk, 8, 8)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def check_hosts(hosts: dict[str, str]) -> dict[str, str]:
    """Validate a hosts map: names map only to loopback addresses. Returns a lower-cased copy."""
    out: dict[str, str] = {}
    for name, ip in dict(hosts).items():
        if not isinstance(name, str) or not name or any(c in name for c in '",\r\n\x00 '):
            raise ConfigError(f"bad host name {name!r}")
        if not isinstance(ip, str) or not is_loopback(ip):
            raise ConfigError(
                f"host {name!r} maps to {ip!r}: the emulator only allows loopback addresses "
                "(127.0.0.0/8, ::1)"
            )
        out[name.lower()] = str(ipaddress.ip_address(ip))
    return out
