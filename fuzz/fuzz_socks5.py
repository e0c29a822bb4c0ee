#!/usr/bin/env python3
"""Fuzz the sans-IO SOCKS5 parser (modemd.proxy.socks5_parser).

The parser's documented way to refuse input is a returned ``Failure`` event, so *no* exception may
escape it at all. Byte 0 seeds the chunking; the rest is what a client sends (greeting + request +
early data), also handed whole to parse_greeting / parse_request / parse_udp_datagram.

Whatever it accepts must be safe to put into an AT command line: a ``Request`` / ``UdpDatagram`` host
never contains ``"``, ``\\``, CR, LF, other control bytes or non-ASCII, passes
modemd.validate.check_hostname unchanged, and a domain-name request round-trips: the same host and
port come back when it is encoded as a domain request and parsed again. Leftover bytes after the
request are exactly what followed it on the wire.
"""

from __future__ import annotations

import struct
import sys

from _common import Input, chunks, instrumented, main

with instrumented():
    from modemd.proxy.socks5_parser import (
        ATYP_DOMAIN,
        ATYP_IPV4,
        ATYP_IPV6,
        CMD_CONNECT,
        CMD_UDP_ASSOCIATE,
        Failure,
        Greeting,
        Request,
        Socks5Parser,
        UdpDatagram,
        parse_greeting,
        parse_request,
        parse_udp_datagram,
    )
    from modemd.validate import check_hostname


def check_host(host: str, atyp: int) -> None:
    assert isinstance(host, str)
    assert all(0x20 < ord(c) < 0x7F for c in host), repr(host)
    assert '"' not in host and "\\" not in host, repr(host)
    assert check_hostname(host) == host, repr(host)
    assert atyp in (ATYP_IPV4, ATYP_IPV6, ATYP_DOMAIN)


def domain_request(cmd: int, host: str, port: int) -> bytes:
    name = host.encode("ascii")
    return bytes([5, cmd, 0, ATYP_DOMAIN, len(name)]) + name + struct.pack("!H", port)


def check_request(req: Request) -> None:
    check_host(req.host, req.atyp)
    assert req.command in (CMD_CONNECT, CMD_UDP_ASSOCIATE), req
    assert 0 <= req.port <= 65535 and (req.port or req.command != CMD_CONNECT), req
    if req.atyp == ATYP_DOMAIN:
        again = parse_request(domain_request(req.command, req.host, req.port))
        assert again is not None and again[0] == req, (req, again)


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    seed = inp.byte()
    wire = inp.rest()

    parser = Socks5Parser()
    events = []
    fed = 0
    for piece in chunks(wire, seed):
        parser.feed(piece)
        fed += len(piece)
        while (ev := parser.next_event()) is not None:
            events.append(ev)
            assert isinstance(ev, (Greeting, Request, Failure)), ev
            assert len(events) <= 2, events
            if isinstance(ev, Request):
                check_request(ev)
                assert isinstance(events[0], Greeting)
            elif isinstance(ev, Failure):
                assert ev.code is None or 0 < ev.code <= 8, ev
                assert isinstance(ev.reason, str)
    if events and isinstance(events[-1], Request):
        used = len(wire) - len(parser.leftover)
        assert wire[used:] == parser.leftover

    for fn in (parse_greeting, parse_request):
        out = fn(wire)
        if out is not None:
            ev, used = out
            assert 0 < used <= len(wire), (used, len(wire))
            if isinstance(ev, Request):
                check_request(ev)
    dgram = parse_udp_datagram(wire)
    assert isinstance(dgram, (UdpDatagram, Failure))
    if isinstance(dgram, UdpDatagram):
        check_host(dgram.host, dgram.atyp)
        assert wire.endswith(dgram.payload)


if __name__ == "__main__":
    main(test_one_input)
    sys.exit(0)
