"""Property tests: bad input never hurts the daemon (the fast, always-on cousins of fuzz/).

Four surfaces, each fed random and adversarial input:

* the AT reader (Framer under AtProtocol): never raises, memory stays bounded, every Done is final;
* the URC parsers: never raise;
* the SOCKS5 request parser: never raises (it refuses with a Failure event), and every host name it
  accepts is safe for an AT command line and round-trips;
* parse_config: only ConfigError escapes, and the PDP password never appears in an error message.
"""

from __future__ import annotations

import datetime
import math
import string
import struct

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modemd.at.protocol import (
    ERROR_FINALS,
    ERROR_PREFIXES,
    MAX_PAYLOAD,
    OK_FINALS,
    SEND_FINALS,
    AtProtocol,
    Command,
    Done,
    PromptWanted,
    Unknown,
    UrcEvent,
)
from modemd.at.urc import Urc, is_urc, parse_urc, recv_header, split_fields
from modemd.config import ConfigError, parse_config
from modemd.proxy.socks5_parser import (
    ATYP_DOMAIN,
    CMD_CONNECT,
    CMD_UDP_ASSOCIATE,
    REP_HOST_UNREACHABLE,
    Failure,
    Greeting,
    Request,
    Socks5Parser,
    UdpDatagram,
    parse_request,
    parse_udp_datagram,
)
from modemd.validate import check_hostname

from .real_lines import CR_ONLY_QIRD, PUSH_FRAME
from .real_lines import LINES as REAL_LINES
from .real_lines import STREAMS as REAL_STREAMS

URC_TYPES = Urc.__args__
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


# -- the AT reader -------------------------------------------------------------------------------

COMMANDS = (
    Command("AT+QIRD=0,1500", prefix="+QIRD:", payload=True),
    Command("AT+QISEND=0,5", data=b"hello", finals=SEND_FINALS),
    Command("ATI", bare_lines=True),
    Command("AT+QISEND=1,3", data=b"abc", finals=OK_FINALS, after_ok=SEND_FINALS),
    Command("AT+QICLOSE=0", after_ok=frozenset({"CLOSE OK"})),
    Command("AT+QISTATE?", prefix="+QISTATE:"),
    Command("AT"),
)
AT_TOKENS = [
    b"\r\n", b"\r", b"\n", b"> ", b">", b"OK", b"ERROR", b"+CME ERROR: 550", b"SEND OK",
    b"SEND FAIL", b"CLOSE OK", b"+QIRD: ", b"+QIRD: 5", b"+QIRD: 1500", b"+QIRD: 99999999",
    b'+QIRD: 4,"10.0.0.1",5683', b"+QIRD: \xb2", b"+QISTATE: ", b'+QIURC: "recv",0',
    b'+QIURC: "recv",0,4', b'+QIURC: "recv",1,999999', b'+QIURC: "closed",0', b"+QIOPEN: 0,0",
    b"RDY", b"ATI", b"AT", b"0", b"1460", b",", b'"', b"\xff", b"X" * 70,
]
at_streams = st.lists(
    st.one_of(st.binary(max_size=24), st.sampled_from(AT_TOKENS)), max_size=60
).map(b"".join)


def drive(proto: AtProtocol, pieces: list[bytes], start: int, max_line: int, max_payload: int):
    """Feed pieces, answering as the channel does; check the invariants after every piece."""
    index = start
    cmd = COMMANDS[index % len(COMMANDS)]
    proto.send(cmd)
    finals = []
    for piece in pieces:
        proto.receive(piece)
        while (ev := proto.next_event()) is not None:
            if isinstance(ev, Done):
                resp = ev.response
                assert resp.final and resp.command is cmd and proto.in_flight is None
                assert (
                    resp.final in cmd.finals
                    or resp.final in ERROR_FINALS
                    or resp.final.startswith(ERROR_PREFIXES)
                    or (cmd.after_ok is not None and resp.final in cmd.after_ok)
                ), (resp.final, cmd)
                if resp.payload is not None:
                    assert cmd.payload and len(resp.payload) <= max_payload * len(resp.lines)
                finals.append(resp.final)
                index += 1
                cmd = COMMANDS[index % len(COMMANDS)]
                proto.send(cmd)
            elif isinstance(ev, PromptWanted):
                assert proto.send_data() == cmd.data
            elif isinstance(ev, UrcEvent):
                assert is_urc(ev.text)
                assert ev.payload is None or 0 < len(ev.payload) <= max_payload
                assert isinstance(parse_urc(ev.text, ev.payload), URC_TYPES)
            else:
                assert isinstance(ev, Unknown)
        assert proto.framer.buffered <= max_line + max_payload
    return finals


@given(
    stream=at_streams,
    cuts=st.lists(st.integers(0, 5000), max_size=12),
    start=st.integers(0, len(COMMANDS) - 1),
    push=st.sets(st.integers(0, 2)),
    small=st.booleans(),
)
@FAST
def test_at_reader_never_raises_and_stays_bounded(stream, cuts, start, push, small):
    max_line, max_payload = (64, 1500) if small else (4096, MAX_PAYLOAD)
    proto = AtProtocol(max_line, max_payload)
    for cid in push:
        proto.set_push(cid, True)
    drive(proto, chunked(stream, cuts), start, max_line, max_payload)
    proto.abort()
    proto.reset()
    assert proto.framer.buffered == 0


@given(
    size=st.integers(MAX_PAYLOAD + 1, 10**15),
    # high bytes only: no line ends, no final result codes, no prefixes in the junk
    junk=st.binary(max_size=6000).map(lambda b: bytes(x | 0x80 for x in b)),
    cuts=st.lists(st.integers(0, 7000), max_size=6),
)
@settings(max_examples=40, deadline=None)
@example(size=15046, junk=b"\xff" * 5000, cuts=[])  # the fuzzer's find: "+QIRD: 1500" with a bad digit
def test_oversized_payload_length_is_not_waited_for(size, junk, cuts):
    """Regression: a line announcing more than MAX_PAYLOAD bytes used to make the framer swallow
    everything after it (the final OK included) and buffer without bound."""
    proto = AtProtocol()
    wire = f"\r\n+QIRD: {size}\r\n".encode() + junk + b"\r\n\r\nOK\r\n"
    finals = drive(proto, chunked(wire, cuts), 0, 4096, MAX_PAYLOAD)
    assert finals[:1] == ["OK"]
    assert proto.counters["bad_payload_lengths"] == 1


def test_oversized_push_length_is_not_waited_for():
    proto = AtProtocol()
    proto.set_push(0, True)
    proto.receive(b'\r\n+QIURC: "recv",0,99999999\r\n' + b"x" * 10000 + b"\r\n")
    events = []
    while (ev := proto.next_event()) is not None:
        events.append(ev)
    assert isinstance(events[0], Unknown) and proto.framer.buffered == 0
    assert proto.counters["bad_payload_lengths"] == 1


@pytest.mark.parametrize("digit", ["\xb2", "\xb3", "\xb9", "1\xb2"])
def test_superscript_digit_length_is_not_a_crash(digit):
    """Regression: '²'.isdigit() is True but int('²') raises; a noisy '+QIRD: ²' line killed the
    channel's reader task."""
    proto = AtProtocol()
    proto.send(COMMANDS[0])
    proto.receive(f"\r\n+QIRD: {digit}\r\n\r\nOK\r\n".encode("latin-1"))
    ev = proto.next_event()
    assert isinstance(ev, Done) and ev.response.final == "OK" and ev.response.payload is None


def events_of(pieces: list[bytes], start: int, push: set[int], max_line: int = 4096) -> list:
    """Every event of the stream, answering as the channel does (the next command after each Done)."""
    proto = AtProtocol(max_line)
    for cid in push:
        proto.set_push(cid, True)
    index = start
    proto.send(COMMANDS[index % len(COMMANDS)])
    out = []
    for piece in pieces:
        proto.receive(piece)
        while (ev := proto.next_event()) is not None:
            out.append(ev)
            if isinstance(ev, Done):
                index += 1
                proto.send(COMMANDS[index % len(COMMANDS)])
    out.append(("pending", proto.awaiting_line_end, proto.framer.buffered))
    if proto.end_pending_line():
        while (ev := proto.next_event()) is not None:
            out.append(ev)
    return out


REAL_PIECES = (
    [line.encode("latin-1") for _, line in REAL_LINES]
    + [wire for _, _, wire, _, _ in REAL_STREAMS]
    + [PUSH_FRAME, CR_ONLY_QIRD, b"+QIURC: \"recv\",0,5", b"+QIRD: 5", b"> ", b">", b" "]
    + [b"OK", b"SEND OK", b"ERROR", b"CLOSE OK"]
)
ENDS = [b"\r\n", b"\r\r\n", b"\n", b"\r", b"\r\n\r\n", b""]
real_streams = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(REAL_PIECES), st.sampled_from(ENDS)).map(lambda t: t[0] + t[1]),
        st.binary(max_size=8),
    ),
    max_size=30,
).map(b"".join)


@given(
    stream=real_streams,
    cuts=st.lists(st.integers(0, 5000), max_size=16),
    start=st.integers(0, len(COMMANDS) - 1),
    push=st.sets(st.integers(0, 2)),
    small=st.booleans(),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(stream=b"\r\nOK\r\n", cuts=[5], start=6, push=set(), small=False)  # split CR | LF
@example(stream=b'\r\n+QIURC: "recv",0,4\r\ntest\r\n', cuts=[8, 14, 22, 23], start=6, push={0},
         small=False)  # split inside the recv header, between its CR and LF and in the payload
def test_any_split_of_real_module_output_gives_the_same_events(stream, cuts, start, push, small):
    """The line discipline decides nothing on a chunk boundary: a line is complete at its LF (or
    at the byte after a CR-only end), so the events of a split stream are those of the whole one,
    including whether a line is left pending."""
    max_line = 64 if small else 4096
    whole = events_of([stream], start, push, max_line)
    split = events_of(chunked(stream, cuts), start, push, max_line)
    ones = events_of([stream[i : i + 1] for i in range(len(stream))], start, push, max_line)
    assert split == whole
    assert ones == whole


# -- URCs ----------------------------------------------------------------------------------------

URC_PREFIXES = [
    "", "+QIURC: ", '+QIURC: "recv",', '+QIURC: "dnsgip",', '+QIURC: "incoming",', "+QIOPEN: ",
    "+QPING: ", "+QNTP: ", "+QIACTEX: ", "+QIDEACTEX: ", "+CPIN: ", "+CEREG: ", "+CREG",
]


@given(prefix=st.sampled_from(URC_PREFIXES), text=st.text(max_size=80),
       payload=st.none() | st.binary(max_size=16))
@FAST
def test_parse_urc_never_raises(prefix, text, payload):
    line = prefix + text
    assert isinstance(parse_urc(line, payload), URC_TYPES)
    is_urc(line)
    recv_header(line)
    assert split_fields(line)


@given(raw=st.binary(max_size=120))
@FAST
def test_parse_urc_never_raises_on_latin1_lines(raw):
    assert isinstance(parse_urc(raw.decode("latin-1")), URC_TYPES)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters='"\u201c\u201d'), max_size=12)
                .map(str.strip), min_size=1, max_size=6))
@FAST
def test_split_fields_round_trips_quoted_fields(fields):
    assert split_fields(",".join(f'"{f}"' for f in fields)) == fields


# -- SOCKS5 --------------------------------------------------------------------------------------

def domain_request(name: bytes, port: int, cmd: int = CMD_CONNECT) -> bytes:
    return bytes([5, cmd, 0, ATYP_DOMAIN, len(name)]) + name + struct.pack("!H", port)


def assert_at_safe(host: str) -> None:
    assert all(0x20 < ord(c) < 0x7F for c in host), repr(host)
    assert '"' not in host and "\\" not in host
    assert check_hostname(host) == host


def parse_all(pieces: list[bytes]) -> list:
    parser = Socks5Parser()
    out = []
    for piece in pieces:
        parser.feed(piece)
        while (ev := parser.next_event()) is not None:
            out.append(ev)
    return out


@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=8),
       greet=st.booleans())
@FAST
def test_socks5_garbage_never_raises(data, cuts, greet):
    wire = (b"\x05\x01\x00" if greet else b"") + data
    events = parse_all(chunked(wire, cuts))
    assert len(events) <= 2
    for ev in events:
        assert isinstance(ev, (Greeting, Request, Failure))
        if isinstance(ev, Request):
            assert_at_safe(ev.host)
    dgram = parse_udp_datagram(data)
    if isinstance(dgram, UdpDatagram):
        assert_at_safe(dgram.host)


tricky_names = st.one_of(
    st.binary(max_size=255),
    st.text(max_size=60).map(lambda s: s.encode("utf-8")[:255]),
    st.lists(st.sampled_from([b"a", b"example", b".", b"-", b"com", b"1", b"::", b'"', b"\r", b"\n",
                              b"\x00", b"\x1a", b"\\", b"%", b"[", b"]", b"\xd0\xb5", b" "]),
             max_size=30).map(lambda parts: b"".join(parts)[:255]),
)


@given(name=tricky_names, port=st.integers(1, 65535),
       cmd=st.sampled_from([CMD_CONNECT, CMD_UDP_ASSOCIATE]), cuts=st.lists(st.integers(0, 300)))
@settings(max_examples=300, deadline=None)
@example(name=b'evil"\r\nAT+QPOWD=1\r\n', port=80, cmd=CMD_CONNECT, cuts=[])
@example(name=b"a\\22b", port=80, cmd=CMD_CONNECT, cuts=[])
@example(name=b"x\x00y", port=80, cmd=CMD_CONNECT, cuts=[])
@example(name=b"\x1a", port=80, cmd=CMD_CONNECT, cuts=[])
def test_socks5_domain_names_are_at_safe_and_round_trip(name, port, cmd, cuts):
    events = parse_all(chunked(b"\x05\x01\x00" + domain_request(name, port, cmd), cuts))
    assert isinstance(events[0], Greeting) and len(events) == 2
    ev = events[1]
    bad = any(b < 0x21 or b > 0x7E or b in b'"\\' for b in name)
    if isinstance(ev, Failure):
        assert ev.code == REP_HOST_UNREACHABLE
        return
    assert not bad, f"accepted {name!r}"
    assert isinstance(ev, Request) and (ev.command, ev.port) == (cmd, port)
    assert_at_safe(ev.host)
    assert ev.host == check_hostname(name)
    again = parse_request(domain_request(ev.host.encode("ascii"), ev.port, ev.command))
    assert again is not None and again[0] == ev


labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=5).map(".".join).filter(
    lambda h: not h.split(".")[-1].isdigit()
)


@given(host=hostnames, port=st.integers(1, 65535))
@FAST
def test_socks5_valid_domain_names_are_accepted_unchanged(host, port):
    out = parse_request(domain_request(host.encode(), port))
    assert out is not None
    assert out[0] == Request(CMD_CONNECT, ATYP_DOMAIN, host, port)


# -- configuration -------------------------------------------------------------------------------

SECTIONS = {
    "modem": ("port", "baudrate", "rtscts", "model", "lock_dir", "health_interval", "health_timeout"),
    "pdp": ("context_id", "apn", "username", "password", "password_file", "auth", "ip_type"),
    "power": ("backend", "chip", "pwrkey", "supply", "off", "on", "pwrkey_command", "pwrkey_seconds"),
    "supervisor": ("healthy_reset_seconds", "reboot_jitter", "ack_poll_count"),
    "forward": ("name", "listen", "remote", "context_id", "mode", "group", "allow_non_loopback"),
    "listen": ("name", "protocol", "module_port", "target", "context_id"),
    "socks": ("listen", "mode", "group", "allow_non_loopback", "handshake_timeout", "max_clients"),
    "proxy": ("queue_timeout", "queue_limit", "linger_seconds", "unacked_window", "direct_push"),
    "metrics": ("listen", "allow_non_loopback"),
    "control": ("socket", "mode", "group"),
    "log": ("level",),
}  # fmt: skip
ODD_STRINGS = [
    "", "tcp:127.0.0.1:1883", "unix:/run/x.sock", "udp:[::1]:5683", "tcp:0.0.0.0:1",
    "broker.example.com:8883", "[2001:db8::1]:443", "0660", "root", "\u00b2", "a\x00b",
    'evil"\r\nAT+QPOWD=1\r\n', "a\\22b", "pap", "command", "/dev/null", "a" * 300, "-1",
]
toml_scalars = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=20),
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, -(10**400), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.dates(),
    st.times(),
    st.datetimes(timezones=st.just(datetime.timezone.utc)),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def config_dicts(draw):
    data = {}
    for section in draw(st.lists(st.sampled_from(list(SECTIONS)) | st.text(max_size=6), max_size=6)):
        keys = SECTIONS.get(section, ("x",))
        table = draw(st.dictionaries(
            st.sampled_from(keys) | st.text(max_size=8), toml_values, max_size=5
        ))
        if section in ("forward", "listen") and draw(st.booleans()):
            data[section] = [table]
        else:
            data[section] = draw(st.just(table) | toml_values)
    return data


@given(data=config_dicts(), emulate=st.booleans())
@FAST
def test_parse_config_dicts_only_raise_config_error(data, emulate, tmp_path_factory):
    base = tmp_path_factory.mktemp("cfg")
    try:
        parse_config(data, base, emulate=emulate)
    except ConfigError as exc:
        assert exc.errors and all(isinstance(e, str) and e for e in exc.errors)


toml_lines = st.one_of(
    st.sampled_from([f"[{s}]" for s in SECTIONS] + ["[[forward]]", "[[listen]]", "[pdp", "x = "]),
    st.builds(
        lambda k, v: f"{k} = {v}",
        st.sampled_from(sorted({k for ks in SECTIONS.values() for k in ks})),
        st.sampled_from([
            '"a"', '""', "1", "-1", "1e400", "nan", "inf", "true", "[]", '["/bin/true"]', "{}",
            "1979-05-27", '"\\u0000"', '"\u00b2"', '"tcp:127.0.0.1:1"', '"unix:/x"', '"pap"',
            "1" + "0" * 400, "[" * 600 + "]" * 600, '"' + "a" * 300 + '"',
        ]),
    ),
    st.text(max_size=30),
)


@given(lines=st.lists(toml_lines, max_size=12), emulate=st.booleans())
@FAST
def test_parse_config_text_only_raises_config_error(lines, emulate, tmp_path_factory):
    text = "\n".join(lines)
    base = tmp_path_factory.mktemp("cfg")
    for data in (text, text.encode("utf-8", "surrogatepass")):
        try:
            parse_config(data, base, emulate=emulate)
        except ConfigError as exc:
            assert exc.errors


@given(raw=st.binary(max_size=200))
@FAST
def test_parse_config_bytes_only_raise_config_error(raw):
    try:
        parse_config(raw, "/nonexistent", emulate=True)
    except ConfigError as exc:
        assert exc.errors


# A mistake somewhere else in the file: (text before [pdp], lines inside [pdp], text after).
MISTAKES = [
    ("", "", '[modem]\nbaudrate = 12345\n'),
    ("", "", '[modem]\nbaudrat = 115200\n'),
    ("", "", '[modem]\nhealth_interval = "30"\n'),
    ("", "", "[modem]\nhealth_interval = 1" + "0" * 400 + "\n"),
    ("", "", '[modem]\nport = "ttyUSB2"\n'),
    ("", "", '[[forward]]\nname = "x"\nlisten = "tcp:127.0.0.1:1883"\nremote = "evil\\"h:1"\n'),
    ("", "", '[[forward]]\nname = "x"\nlisten = "tcp:0.0.0.0:1883"\nremote = "a.example:1"\n'),
    ("", "", '[[forward]]\nname = "x y"\nlisten = "tcp:127.0.0.1:1"\nremote = "a.example:99999"\n'),
    ("", "", '[[listen]]\nname = "l"\nmodule_port = 0\ntarget = "udp:127.0.0.1:1"\n'),
    ("", "", '[socks]\nlisten = "udp:127.0.0.1:1080"\n'),
    ("", "", '[log]\nlevel = "loud"\n'),
    ("", "", '[power]\nbackend = "command"\n'),
    ("", "", '[control]\ngroup = "no-such-group-modemd"\n'),
    ("", "", '[control]\ngroup = "\u00b2"\n'),
    ("", "", "[proxy]\nunacked_window = 0\n"),
    ("", "", "[supervisor]\nreboot_jitter = 2\n"),
    ("", "", "[pdp]\n"),                   # the table declared twice (TOML error)
    ("", "", "[modem\n"),                  # TOML syntax error
    ("", "", "x = [" * 700 + "\n"),        # nested too deeply for tomllib
    ("typo = 1\n", "", ""),                # unknown top-level key
    ("", 'apn = "bad apn"\n', ""),
    ("", 'apn = "internet\\r\\nAT+QPOWD=1"\n', ""),
    ("", "context_id = 99\n", ""),
    ("", 'ip_type = "ipv5"\n', ""),
    ("", 'username = "u\\"ser"\n', ""),
    ("", 'password_file = "pw"\n', ""),    # both password and password_file
    ("", 'auth = "none"\n', ""),           # credentials that would never be sent
    ("", "PASSWORD_AS_TYPO\n", ""),         # pasword = <the password>: an unknown key
    ("", "PASSWORD_TWICE\n", ""),           # password declared twice (TOML error)
]


@st.composite
def configs_with_a_mistake(draw):
    password = draw(st.text(alphabet=string.ascii_letters, min_size=12, max_size=40))
    before, inside, after = draw(st.sampled_from(MISTAKES))
    inside = inside.replace("PASSWORD_AS_TYPO", f'pasword = "{password}"')
    inside = inside.replace("PASSWORD_TWICE", f'password = "{password}"')
    pdp = "[pdp]\n" + inside
    if "auth" not in inside:
        pdp += 'auth = "pap"\n'
    pdp += f'username = "user"\npassword = "{password}"\n'
    broken_password = draw(st.sampled_from(["", "\\u0007", '\\"', "\\\\", "é", "x" * 120]))
    if broken_password and draw(st.booleans()):
        pdp = pdp.replace(f'password = "{password}"', f'password = "{password}{broken_password}"')
    text = before + (after + pdp if draw(st.booleans()) and after else pdp + after)
    return password, text


def twin(password: str) -> str:
    """Another password of the same length and validity, to tell a leak from a coincidence:
    'ControlConfi' is in every repr of a Config, but only a leak shows each run's own password."""
    return "".join("Z" if c == "Q" else "Q" for c in password)


def shows(render, password: str) -> bool:
    """Does render(pw) show pw, for the password and for its twin alike?"""
    other = twin(password)
    return password in render(password) and other in render(other)


def config_error(text, base, emulate) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base, emulate=emulate)
    assert info.value.errors
    return str(info.value) + repr(info.value.errors)


@given(case=configs_with_a_mistake(), emulate=st.booleans())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_config_errors_never_show_the_password(case, emulate, tmp_path_factory):
    password, text = case
    base = tmp_path_factory.mktemp("cfg")
    (base / "pw").write_text("other-secret\n")
    assert text.count(password) >= 1 and twin(password) not in text
    assert not shows(lambda pw: config_error(text.replace(password, pw), base, emulate), password)


@given(password=st.text(alphabet=string.ascii_letters, min_size=12, max_size=40),
       junk=st.dictionaries(st.sampled_from(["modem", "proxy", "log", "x"]), toml_values, max_size=3))
@FAST
def test_structured_config_errors_never_show_the_password(password, junk, tmp_path_factory):
    if password in repr(junk) or twin(password) in repr(junk):
        return
    base = tmp_path_factory.mktemp("cfg")

    def render(pw: str) -> str:
        data = {**junk, "pdp": {"auth": "pap", "username": "user", "password": pw}}
        try:
            cfg = parse_config(data, base, emulate=True)
        except ConfigError as exc:
            return str(exc)
        assert cfg.pdp[0].password == pw
        return repr(cfg) + str(cfg.pdp[0])

    assert not shows(render, password)


def test_nan_and_huge_numbers_are_config_errors():
    for value in (math.nan, math.inf, 10**400, -(10**400)):
        with pytest.raises(ConfigError, match=r"^modem\.health_interval: "):
            parse_config({"modem": {"health_interval": value}}, emulate=True)
