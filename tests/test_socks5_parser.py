"""Sans-IO tests of the SOCKS5 request parser (no sockets, no trio)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modemd.proxy.socks5 import reply_code
from modemd.proxy.socks5_parser import (
    ATYP_DOMAIN,
    ATYP_IPV4,
    ATYP_IPV6,
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    REP_ADDRESS_TYPE_NOT_SUPPORTED,
    REP_COMMAND_NOT_SUPPORTED,
    REP_CONNECTION_REFUSED,
    REP_GENERAL_FAILURE,
    REP_HOST_UNREACHABLE,
    REP_NETWORK_UNREACHABLE,
    REP_TTL_EXPIRED,
    Failure,
    Greeting,
    Request,
    Socks5Parser,
    UdpDatagram,
    build_method_choice,
    build_reply,
    build_udp_datagram,
    encode_address,
    parse_udp_datagram,
)
from modemd.sockets import errors as E


def request_bytes(cmd: int, host: str, port: int) -> bytes:
    return bytes([5, cmd, 0]) + encode_address(host, port)


def events(parser: Socks5Parser, pieces: list[bytes]) -> list:
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (ev := parser.next_event()) is not None:
            out.append(ev)
    return out


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join).filter(
    lambda h: not h.split(".")[-1].isdigit()
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.integers(1, 65535)


@given(host=hosts, port=ports, cmd=st.sampled_from([CMD_CONNECT, CMD_UDP_ASSOCIATE]),
       cuts=st.lists(st.integers(0, 400), max_size=8))
@settings(max_examples=300)
def test_any_chunking_gives_greeting_then_request(host, port, cmd, cuts):
    wire = b"\x05\x02\x00\x02" + request_bytes(cmd, host, port)
    got = events(Socks5Parser(), chunked(wire, cuts))
    assert got[0] == Greeting(b"\x00\x02")
    assert got[0].no_auth
    assert len(got) == 2
    req = got[1]
    assert isinstance(req, Request)
    assert (req.command, req.host, req.port) == (cmd, host, port)


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
@settings(max_examples=500)
def test_garbage_never_raises(data, cuts):
    got = events(Socks5Parser(), chunked(data, cuts))
    assert len(got) <= 2
    for ev in got:
        assert isinstance(ev, (Greeting, Request, Failure))
    if any(isinstance(ev, Failure) for ev in got):
        assert isinstance(got[-1], Failure)


@given(host=hosts, port=st.integers(0, 65535), payload=st.binary(max_size=100))
def test_udp_header_round_trip(host, port, payload):
    parsed = parse_udp_datagram(build_udp_datagram(host, port, payload))
    assert isinstance(parsed, UdpDatagram)
    assert (parsed.host, parsed.port, parsed.payload) == (host, port, payload)


@given(st.binary(max_size=64))
def test_udp_garbage_never_raises(data):
    assert isinstance(parse_udp_datagram(data), (UdpDatagram, Failure))


def test_address_types():
    p = Socks5Parser()
    got = events(p, [b"\x05\x01\x00", request_bytes(1, "2001:db8::1", 443)])
    assert got[1] == Request(CMD_CONNECT, ATYP_IPV6, "2001:db8::1", 443)
    got = events(Socks5Parser(), [b"\x05\x01\x00", request_bytes(1, "192.0.2.7", 80)])
    assert got[1] == Request(CMD_CONNECT, ATYP_IPV4, "192.0.2.7", 80)
    got = events(Socks5Parser(), [b"\x05\x01\x00", request_bytes(1, "example.com", 80)])
    assert got[1] == Request(CMD_CONNECT, ATYP_DOMAIN, "example.com", 80)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", REP_COMMAND_NOT_SUPPORTED),  # BIND
        (b"\x05\x09\x00\x01\x7f\x00\x00\x01\x00\x50", REP_COMMAND_NOT_SUPPORTED),
        (b"\x05\x01\x00\x05\x7f\x00\x00\x01\x00\x50", REP_ADDRESS_TYPE_NOT_SUPPORTED),
        (b"\x05\x01\x00\x03\x0bevil\"\r\nAT+Q\x00\x50", REP_HOST_UNREACHABLE),  # AT injection
        (b"\x05\x01\x00\x03\x00\x00\x50", REP_HOST_UNREACHABLE),  # empty name
        (b"\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x00", REP_GENERAL_FAILURE),  # port 0
        (b"\x04\x01\x00\x01\x7f\x00\x00\x01\x00\x50", REP_GENERAL_FAILURE),  # version
    ],
)
def test_bad_requests_get_their_reply_code(request_, code):
    got = events(Socks5Parser(), [b"\x05\x01\x00", request_])
    assert isinstance(got[1], Failure)
    assert got[1].code == code
    assert got[1].reason


def test_not_socks5_closes_silently():
    got = events(Socks5Parser(), [b"GET / HTTP/1.1\r\n"])
    assert got == [Failure(None, got[0].reason)]


def test_no_acceptable_method():
    got = events(Socks5Parser(), [b"\x05\x01\x02"])
    assert got == [Greeting(b"\x02")]
    assert build_method_choice(got[0]) == b"\x05\xff"


def test_leftover_after_request_is_kept():
    p = Socks5Parser()
    events(p, [b"\x05\x01\x00" + request_bytes(1, "127.0.0.1", 80) + b"GET /"])
    assert p.leftover == b"GET /"


def test_build_reply():
    assert build_reply(0) == b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    reply = build_reply(0, "::1", 1080)
    assert reply[3] == ATYP_IPV6
    assert ipaddress.IPv6Address(reply[4:20]) == ipaddress.IPv6Address("::1")
    assert struct.unpack("!H", reply[20:22]) == (1080,)


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("dns_failed", REP_HOST_UNREACHABLE),
        ("socket_connect_failed", REP_CONNECTION_REFUSED),
        ("connection_reset", REP_CONNECTION_REFUSED),
        ("pdp_broken", REP_NETWORK_UNREACHABLE),
        (E.NOT_SERVING, REP_NETWORK_UNREACHABLE),
        ("operation_timeout", REP_TTL_EXPIRED),
        (E.OPEN_TIMEOUT, REP_TTL_EXPIRED),
        (E.INVALID_HOST, REP_HOST_UNREACHABLE),
        (E.QUEUE_TIMEOUT, REP_GENERAL_FAILURE),
        ("error_599", REP_GENERAL_FAILURE),
    ],
)
def test_reply_codes_by_canonical_name(reason, code):
    assert reply_code(reason) == code


def test_family_numbers_map_through_names():
    """Generic numbers 565/554 and BG96 565/566 give the same replies (seeds §5.1)."""
    from modemd.profiles import BG96, GENERIC

    assert reply_code(GENERIC.error_name(565)) == reply_code(BG96.error_name(565))
    assert reply_code(GENERIC.error_name(554)) == REP_CONNECTION_REFUSED
    assert reply_code(BG96.error_name(566)) == REP_CONNECTION_REFUSED
