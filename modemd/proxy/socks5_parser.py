"""Sans-IO SOCKS5 (RFC 1928, no authentication): bytes in, a greeting, a request or a failure out.

No sockets, no clock: `Socks5Parser.feed()` takes whatever the client sent (any chunking, also a
greeting and request sent together) and `next_event()` returns `Greeting`, `Request`, `Failure` or None
(need more bytes). A `Failure` carries the reply code the server must send (None: close silently, for
input that is not SOCKS5 at all). Domain names go through modemd.validate.check_hostname: they reach an
AT command line as-is.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ..validate import check_hostname

VERSION = 5
METHOD_NO_AUTH = 0x00
METHOD_NONE_ACCEPTABLE = 0xFF

CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

REP_SUCCEEDED = 0x00
REP_GENERAL_FAILURE = 0x01
REP_NOT_ALLOWED = 0x02
REP_NETWORK_UNREACHABLE = 0x03
REP_HOST_UNREACHABLE = 0x04
REP_CONNECTION_REFUSED = 0x05
REP_TTL_EXPIRED = 0x06
REP_COMMAND_NOT_SUPPORTED = 0x07
REP_ADDRESS_TYPE_NOT_SUPPORTED = 0x08

REPLY_TEXT = {
    REP_SUCCEEDED: "succeeded",
    REP_GENERAL_FAILURE: "general SOCKS server failure",
    REP_NOT_ALLOWED: "connection not allowed by ruleset",
    REP_NETWORK_UNREACHABLE: "network unreachable",
    REP_HOST_UNREACHABLE: "host unreachable",
    REP_CONNECTION_REFUSED: "connection refused",
    REP_TTL_EXPIRED: "TTL expired",
    REP_COMMAND_NOT_SUPPORTED: "command not supported",
    REP_ADDRESS_TYPE_NOT_SUPPORTED: "address type not supported",
}

MAX_GREETING = 2 + 255
MAX_REQUEST = 4 + 1 + 255 + 2


@dataclass(frozen=True)
class Greeting:
    methods: bytes

    @property
    def no_auth(self) -> bool:
        return METHOD_NO_AUTH in self.methods


@dataclass(frozen=True)
class Request:
    command: int
    atyp: int
    host: str   # IPv4/IPv6 literal (canonical) or a validated host name
    port: int


@dataclass(frozen=True)
class Failure:
    code: int | None  # SOCKS reply code to send, None: not SOCKS5, just close
    reason: str


@dataclass(frozen=True)
class UdpDatagram:
    atyp: int
    host: str
    port: int
    payload: bytes


Event = Greeting | Request | Failure


class Socks5Parser:
    """The client side of the handshake: a greeting, then one request."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._stage = "greeting"  # greeting | request | done

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def leftover(self) -> bytes:
        """Bytes after the request (a client that sent data before the reply)."""
        return bytes(self._buf) if self._stage == "done" else b""

    def next_event(self) -> Event | None:
        if self._stage == "greeting":
            event = parse_greeting(self._buf)
            stage = "request"
        elif self._stage == "request":
            event = parse_request(self._buf)
            stage = "done"
        else:
            return None
        if event is None:
            return None
        result, used = event
        del self._buf[:used]
        self._stage = "done" if isinstance(result, Failure) else stage
        return result


def parse_greeting(buf: bytes | bytearray) -> tuple[Greeting | Failure, int] | None:
    """VER NMETHODS METHODS -> (event, bytes used), or None for "need more"."""
    if not buf:
        return None
    if buf[0] != VERSION:
        return Failure(None, f"not a SOCKS5 greeting (first byte 0x{buf[0]:02x})"), len(buf)
    if len(buf) < 2:
        return None
    end = 2 + buf[1]
    if len(buf) < end:
        return None
    return Greeting(bytes(buf[2:end])), end


def parse_request(buf: bytes | bytearray) -> tuple[Request | Failure, int] | None:
    """VER CMD RSV ATYP DST.ADDR DST.PORT -> (event, bytes used), or None for "need more"."""
    if len(buf) < 4:
        return None
    if buf[0] != VERSION:
        return Failure(REP_GENERAL_FAILURE, f"request version 0x{buf[0]:02x}, not 5"), len(buf)
    command, atyp = buf[1], buf[3]
    parsed = _address(buf, 4, atyp)
    if parsed is None:
        return None
    if isinstance(parsed, Failure):
        return parsed, len(buf)
    host, end = parsed
    if len(buf) < end + 2:
        return None
    (port,) = struct.unpack_from("!H", buf, end)
    used = end + 2
    if command not in (CMD_CONNECT, CMD_UDP_ASSOCIATE):
        name = "BIND" if command == CMD_BIND else f"command 0x{command:02x}"
        return Failure(REP_COMMAND_NOT_SUPPORTED, f"{name} is not supported"), used
    if command == CMD_CONNECT and port == 0:
        return Failure(REP_GENERAL_FAILURE, "CONNECT to port 0"), used
    return Request(command, atyp, host, port), used


def _address(buf: bytes | bytearray, at: int, atyp: int) -> tuple[str, int] | Failure | None:
    """The address at `at`: (host, end offset), a Failure, or None for "need more"."""
    if atyp == ATYP_IPV4:
        end = at + 4
        return None if len(buf) < end else (str(ipaddress.IPv4Address(bytes(buf[at:end]))), end)
    if atyp == ATYP_IPV6:
        end = at + 16
        return None if len(buf) < end else (str(ipaddress.IPv6Address(bytes(buf[at:end]))), end)
    if atyp != ATYP_DOMAIN:
        return Failure(REP_ADDRESS_TYPE_NOT_SUPPORTED, f"address type 0x{atyp:02x}")
    if len(buf) < at + 1:
        return None
    end = at + 1 + buf[at]
    if len(buf) < end:
        return None
    try:
        return check_hostname(bytes(buf[at + 1 : end]), "SOCKS5 host name"), end
    except ValueError as exc:
        return Failure(REP_HOST_UNREACHABLE, str(exc))


def encode_address(host: str, port: int, atyp: int | None = None) -> bytes:
    """ATYP ADDR PORT for a reply or a UDP header (a domain only when `atyp` asks for one)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii")
        return bytes([ATYP_DOMAIN, len(name)]) + name + struct.pack("!H", port)
    kind = ATYP_IPV4 if ip.version == 4 else ATYP_IPV6
    return bytes([kind]) + ip.packed + struct.pack("!H", port)


def build_method_choice(greeting: Greeting) -> bytes:
    return bytes([VERSION, METHOD_NO_AUTH if greeting.no_auth else METHOD_NONE_ACCEPTABLE])


def build_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    return bytes([VERSION, code, 0]) + encode_address(host, port)


def parse_udp_datagram(data: bytes) -> UdpDatagram | Failure:
    """RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA; fragments are not supported (dropped)."""
    if len(data) < 4:
        return Failure(None, "UDP datagram shorter than its header")
    if data[2] != 0:
        return Failure(None, "fragmented UDP datagram")
    parsed = _address(data, 4, data[3])
    if parsed is None:
        return Failure(None, "truncated UDP header")
    if isinstance(parsed, Failure):
        return Failure(None, parsed.reason)
    host, end = parsed
    if len(data) < end + 2:
        return Failure(None, "truncated UDP header")
    (port,) = struct.unpack_from("!H", data, end)
    return UdpDatagram(data[3], host, port, data[end + 2 :])


def build_udp_datagram(host: str, port: int, payload: bytes) -> bytes:
    return b"\x00\x00\x00" + encode_address(host, port) + payload
