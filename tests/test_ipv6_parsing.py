"""IPv6 in every line the manuals show (sans-IO): URCs, +QIACT?, +QISTATE, +QIRD, +QPING, +QIDNSCFG,
the profile data for contexts and IPv6, and the QIOPEN / listener choices made from it."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modemd.at.commands import QuectelAt, context_state, dns_servers, ip_version
from modemd.at.urc import (
    ActExResult,
    DnsGipAddress,
    Incoming,
    PingReply,
    Recv,
    after_prefix,
    ip_text,
    parse_urc,
    split_fields,
)
from modemd.profiles import PROFILES


def fields(line: str) -> list[str]:
    return split_fields(after_prefix(line))


# Lines as the manuals and real captures print them (S5 §3.3, §3.7, §3.9, §3.11.2; RU §2.3.3;
# line-shapes D3, D7, D10, E10) with what modemd must read from them.
URC_TABLE = [
    ('+QIURC: "incoming",11,1,"2001:db8:1111:2222:3333:4444:5555:6666",54091',
     Incoming(11, 1, "2001:db8:1111:2222:3333:4444:5555:6666", 54091)),
    ('+QIURC: "incoming",11,0,"78.94.9.92",62060', Incoming(11, 0, "78.94.9.92", 62060)),
    ('+QIURC: "incoming",3,2,"0:0:0:0:0:0:0:1",40000', Incoming(3, 2, "::1", 40000)),
    ('+QIURC: "incoming",3,2,"2409:8D1E:750C:DFA4::1",1', Incoming(3, 2, "2409:8d1e:750c:dfa4::1", 1)),
    ('+QPING: 0,"2001:db8:1111:2222:3333:4444:5555:6666",32,192,255',
     PingReply(0, "2001:db8:1111:2222:3333:4444:5555:6666", 32, 192, 255)),
    ('+QPING: 0,"216.58.200.14",32,73,255', PingReply(0, "216.58.200.14", 32, 73, 255)),
    ('+QPING: 0,"::1",32,20,255', PingReply(0, "::1", 32, 20, 255)),
    ('+QIURC: "dnsgip","2001:DB8::A"', DnsGipAddress("2001:db8::a")),
    ('+QIURC: "recv",2,4,"2001:db8::5",5001', Recv(2, 4, ("2001:db8::5", 5001))),
    ('+QIACTEX: 1,0,3,"10.28.33.36","2409:8D1E:750C:DFA4::1"',
     ActExResult(1, 0, ("10.28.33.36", "2409:8d1e:750c:dfa4::1"))),
    ('+QIACTEX: 2,0,2,"2409::1"', ActExResult(2, 0, ("2409::1",))),
]


@pytest.mark.parametrize(("line", "expected"), URC_TABLE)
def test_urcs_with_ipv6_literals(line, expected):
    assert parse_urc(line) == expected


QIACT_TABLE = [
    ('+QIACT: 1,1,1,"10.XXX.YYY.160"', (1, True, 1, ("10.XXX.YYY.160",))),  # D2 (masked capture)
    ('+QIACT: 1,1,3,"10.28.33.36","2409:8D1E:750C:DFA4::1"',  # D3
     (1, True, 3, ("10.28.33.36", "2409:8d1e:750c:dfa4::1"))),
    ('+QIACT: 2,1,2,"2001:db8:7:157::2"', (2, True, 2, ("2001:db8:7:157::2",))),
    ('+QIACT: 3,0,1', (3, False, 1, ())),
    ('+QIACT: 4,1,3,"10.0.0.1",""', (4, True, 3, ("10.0.0.1",))),
]


@pytest.mark.parametrize(("line", "expected"), QIACT_TABLE)
def test_qiact_read_one_or_two_addresses(line, expected):
    c = context_state(fields(line))
    assert (c.context_id, c.active, c.context_type, c.addresses) == expected


DNS_TABLE = [
    ('+QIDNSCFG: 1,"100.XXX.YYY.10","100.XXX.YYY.10"', (1, "100.XXX.YYY.10", "100.XXX.YYY.10")),  # D7
    ('+QIDNSCFG: 2,"2001:4860:4860::8888","2001:4860:4860:0:0:0:0:8844"',
     (2, "2001:4860:4860::8888", "2001:4860:4860::8844")),
    ('+QIDNSCFG: "8.8.8.8","8.8.4.4"', (None, "8.8.8.8", "8.8.4.4")),  # BC25 AT+QIDNSCFG?
    ('+QIDNSCFG: "2001:DB8::53"', (None, "2001:db8::53", "")),
]


@pytest.mark.parametrize(("line", "expected"), DNS_TABLE)
def test_qidnscfg_lines(line, expected):
    d = dns_servers(fields(line))
    assert (d.context_id, d.primary, d.secondary) == expected


def qistate_of(family: str, line: str):
    return QuectelAt(None, PROFILES[family])._socket_state(fields(line))  # type: ignore[arg-type]


def test_qistate_lines_with_ipv6():
    s = qistate_of("bg95", '+QISTATE: 0,"TCP","2001:db8:1111:2222:3333:4444:5555:6666",5001,11921,'
                           '2,1,0,0,"usbmodem"')
    assert (s.address, s.remote_port, s.local_port, s.state) == (
        "2001:db8:1111:2222:3333:4444:5555:6666", 5001, 11921, "connected")
    s = qistate_of("bg95", '+QISTATE: 1,"TCP LISTENER","2001:DB8:0:0::6",0,12345,3,1,1,0,"usbmodem"')
    assert (s.service_type, s.address, s.state) == ("TCP LISTENER", "2001:db8::6", "listening")
    s = qistate_of("bc25", '+QISTATE: 0,"UDP","::1",5001,3000,2,1,0')
    assert (s.address, s.access_mode, s.server_id) == ("::1", 0, None)


def test_non_addresses_are_left_alone():
    for text in ("www.example.com", "", "10.XXX.YYY.160", "buff full", "[::1"):
        assert ip_text(text) == text
    assert ip_text("[2001:db8::1]") == "2001:db8::1"


# property tests: any IPv6 address, in any spelling the manuals or a capture could use, reads back as
# the one canonical form the local side writes
def spellings(addr: ipaddress.IPv6Address) -> list[str]:
    no_zeros = ":".join(g.lstrip("0") or "0" for g in addr.exploded.split(":"))  # 0:0:...:1
    return [addr.compressed, addr.exploded, addr.compressed.upper(), addr.exploded.upper(),
            no_zeros]


ipv6s = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@given(ipv6s, st.integers(0, 11), st.integers(0, 65535), st.data())
def test_any_ipv6_spelling_in_incoming_and_ping(addr, cid, port, data):
    text = data.draw(st.sampled_from(spellings(addr)))
    canonical = str(addr)
    assert parse_urc(f'+QIURC: "incoming",{cid},0,"{text}",{port}') == Incoming(cid, 0, canonical,
                                                                                 port)
    assert parse_urc(f'+QPING: 0,"{text}",32,5,64') == PingReply(0, canonical, 32, 5, 64)
    assert parse_urc(f'+QIURC: "recv",{cid},3,"{text}",{port}').remote == (canonical, port)


@given(ipv6s, st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address), st.data())
def test_any_ipv4v6_qiact_reply(addr6, addr4, data):
    text = data.draw(st.sampled_from(spellings(addr6)))
    c = context_state(fields(f'+QIACT: 5,1,3,"{addr4}","{text}"'))
    assert c.addresses == (str(addr4), str(addr6))
    assert [ip_version(a) for a in c.addresses] == [4, 6]


# profile data and the choices made from it
def test_context_ranges_and_limits_per_family():
    table = {name: (p.context_ids, p.max_active_contexts) for name, p in PROFILES.items()}
    assert table == {
        "bg95": (range(1, 17), 3), "generic": (range(1, 17), 3), "bc25": (range(1, 4), 3),
        "bg96": (range(1, 17), 3), "rg500u": (range(1, 6), 5),
    }
    assert {n: p.ip_types for n, p in PROFILES.items() if "ipv6" not in p.ip_types} == {
        "generic": ("ipv4",)}
    assert [n for n, p in PROFILES.items() if p.qiopen_protocol_type] == ["bc25"]


def test_bc25_protocol_type_follows_the_literal_then_the_context():
    assert QuectelAt.protocol_type("::1", ipv6_context=False) == 1
    assert QuectelAt.protocol_type("127.0.0.1", ipv6_context=True) == 0
    assert QuectelAt.protocol_type("v6.test", ipv6_context=True) == 1
    assert QuectelAt.protocol_type("v4.test", ipv6_context=False) == 0


def test_listener_address_by_context():
    at = QuectelAt(None, PROFILES["bg95"])  # type: ignore[arg-type]
    assert at.listen_address(False) == "127.0.0.1"
    assert at.listen_address(True) == "0:0:0:0:0:0:0:1"  # S5 §3.7.1, §3.9.1
