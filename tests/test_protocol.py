"""Sans-IO tests of the framer and the AT protocol state machine (no trio, no I/O)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from modemd.at.framer import Framer, Line, Payload, Prompt
from modemd.at.protocol import (
    SEND_FINALS,
    AtProtocol,
    Command,
    Done,
    PromptWanted,
    Unknown,
    UrcEvent,
)
from modemd.at.urc import Closed, Incoming, OpenResult, PdpDeact, Recv, parse_urc

QIRD = Command("AT+QIRD=0,1500", prefix="+QIRD:", payload=True)
URC_LINES = [
    '+QIURC: "recv",3',
    '+QIURC: "closed",2',
    '+QIURC: "pdpdeact",1',
    '+QIURC: "incoming",11,1,"2001:db8::1",54091',
    "+QIOPEN: 4,0",
    "+CEREG: 5",
    "+QIND: PB DONE",
]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


def run(proto: AtProtocol, pieces: list[bytes], on_prompt=None) -> list:
    events = []
    for piece in pieces:
        proto.receive(piece)
        while (ev := proto.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, PromptWanted) and on_prompt:
                on_prompt()
    return events


def qird_stream(payload: bytes, urcs_before_ok: list[str] = ()) -> bytes:
    tail = b"".join(b"\r\n" + u.encode() + b"\r\n" for u in urcs_before_ok)
    return b"\r\n+QIRD: %d\r\n" % len(payload) + payload + b"\r\n" + tail + b"\r\nOK\r\n"


# -- framer ---------------------------------------------------------------------------------------
def test_framer_lines_prompt_payload():
    f = Framer()
    f.feed(b"\r\nOK\r\nAT+X\r\r\n+QIRD: 3\r\n")
    assert f.next_event() == Line("OK")
    assert f.next_event() == Line("AT+X")
    assert f.next_event() == Line("+QIRD: 3")
    f.expect_payload(3)
    assert f.next_event() is None
    f.feed(b"\r\n>")
    assert f.next_event() == Payload(b"\r\n>")
    f.expect_prompt()
    f.feed(b"\r\n> ")
    assert f.next_event() == Prompt()
    assert f.next_event() is None


def test_framer_cr_then_lf_in_next_chunk_before_payload():
    f = Framer()
    f.feed(b"+QIRD: 2\r")
    assert f.next_event() is None and f.line_pending  # complete at its LF, not at its CR
    f.feed(b"\n\nX")
    assert f.next_event() == Line("+QIRD: 2") and not f.line_pending
    f.expect_payload(2)
    assert f.next_event() == Payload(b"\nX")


def test_framer_line_is_complete_at_its_lf():
    f = Framer()
    f.feed(b"\r\nOK\r")
    assert f.next_event() is None and f.line_pending
    f.feed(b"\n")
    assert f.next_event() == Line("OK") and not f.line_pending and not f.cr_only


def test_framer_cr_only_line_end_is_complete_at_the_next_byte():
    f = Framer()
    f.feed(b"OK\r")
    assert f.next_event() is None and f.line_pending
    f.feed(b"+CSQ: 1,2\r")
    assert f.next_event() == Line("OK")
    assert f.next_event() is None and f.line_pending


def test_framer_pending_line_ended_by_silence_and_a_late_lf_is_dropped():
    f = Framer()
    f.feed(b"+QIRD: 3\r")
    assert f.next_event() is None
    assert f.end_pending_line()
    assert f.next_event() == Line("+QIRD: 3")
    assert not f.end_pending_line()  # nothing pending any more
    f.expect_payload(3)
    f.feed(b"\nabc\r\n")  # the LF was only late: it is not payload
    assert f.next_event() == Payload(b"abc")
    assert not f.cr_only


def test_framer_remembers_a_cr_only_module_until_it_sees_cr_lf():
    f = Framer()
    f.feed(b"A\rB\r")
    assert f.next_event() == Line("A")
    assert f.next_event() is None and f.line_pending and not f.cr_only
    f.end_pending_line()
    assert f.next_event() == Line("B") and f.cr_only
    f.feed(b"C\r")  # known CR-only: no wait
    assert f.next_event() == Line("C") and not f.line_pending
    f.feed(b"+QIRD: 2\r\rX\r")  # and a payload follows its header's CR exactly
    assert f.next_event() == Line("+QIRD: 2")
    f.expect_payload(2)
    assert f.next_event() == Payload(b"\rX")
    f.feed(b"D\r\n")
    assert f.next_event() == Line("D") and not f.cr_only


def test_framer_echo_cr_cr_lf_is_one_line_end():
    f = Framer()
    for piece in (b"AT", b"\r", b"\r"):
        f.feed(piece)
        assert f.next_event() is None
    f.feed(b"\n+QIRD: 1\r\n")
    assert f.next_event() == Line("AT") and f.cr_only_ends == 0
    assert f.next_event() == Line("+QIRD: 1")
    f.expect_payload(1)
    f.feed(b"Z\r\n")
    assert f.next_event() == Payload(b"Z")


def test_framer_prompt_forms():
    for wire in (b"> ", b">", b"\r\n>", b"\r\n>\r\n", b"\r\n> \r\n", b">\r"):
        f = Framer()
        f.expect_prompt()
        f.feed(wire)
        assert f.next_event() == Prompt(), wire
        f.feed(b" \r\nSEND OK\r\n")  # a lone space left over as a line (A8) is dropped
        assert f.next_event() == Line("SEND OK"), wire
        assert f.next_event() is None


def test_framer_bounds_garbage_without_newline():
    f = Framer(max_line=64)
    f.feed(b"x" * 1000)
    events = []
    while (ev := f.next_event()) is not None:
        events.append(ev)
    assert all(isinstance(e, Line) and e.truncated for e in events)
    assert f.buffered < 64
    assert f.truncations == len(events)


def test_prompt_only_when_expected():
    f = Framer()
    f.feed(b"> not a prompt\r\n")
    assert f.next_event() == Line("> not a prompt")


# -- protocol -------------------------------------------------------------------------------------
def test_simple_command_ok_and_echo_tolerated():
    p = AtProtocol()
    assert p.send(Command("AT+CSQ", prefix="+CSQ:")) == b"AT+CSQ\r"
    events = run(p, [b"AT+CSQ\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n"])
    assert len(events) == 1 and isinstance(events[0], Done)
    assert events[0].response.lines == ["+CSQ: 24,99"]
    assert events[0].response.final == "OK"
    assert p.counters["echo_lines"] == 1


def test_unknown_line_not_glued_into_result():
    p = AtProtocol()
    p.send(Command("AT+CSQ", prefix="+CSQ:"))
    events = run(p, [b"\r\nhello world\r\n+CSQ: 1,2\r\nOK\r\n"])
    assert isinstance(events[0], Unknown) and events[0].text == "hello world"
    assert events[1].response.lines == ["+CSQ: 1,2"]
    assert p.counters["unknown_lines"] == 1


def test_cme_error_and_error_code():
    p = AtProtocol()
    p.send(Command("AT+QIACT=1"))
    (done,) = run(p, [b"\r\n+CME ERROR: 561\r\n"])
    assert done.response.error and done.response.error_code == 561


def test_qisend_prompt_then_send_ok():
    p = AtProtocol()
    data = b"\r\nOK\r\n\x1a\x1b+QIURC: x"
    p.send(Command("AT+QISEND=0,14", data=data, finals=SEND_FINALS))
    written = []
    events = run(p, [b"\r\n> ", b"\r\nSEND OK\r\n"], on_prompt=lambda: written.append(p.send_data()))
    assert isinstance(events[0], PromptWanted)
    assert written == [data]
    assert events[1].response.final == "SEND OK"


def test_two_stage_send_bc25():
    p = AtProtocol()
    p.send(Command("AT+QISEND=0,3", data=b"abc", finals=frozenset({"OK"}), after_ok=SEND_FINALS))
    events = run(p, [b"\r\n>", b"\r\nOK\r\n", b'\r\n+QIURC: "recv",1\r\n', b"\r\nSEND FAIL\r\n"])
    assert isinstance(events[0], PromptWanted)
    assert isinstance(events[1], UrcEvent)
    assert events[2].response.final == "SEND FAIL"


def test_urc_during_long_command_and_between_lines():
    p = AtProtocol()
    p.send(Command("AT+QIACT=1"))
    events = run(p, [b'\r\n+QIURC: "pdpdeact",2\r\n', b"\r\nOK\r\n"])
    assert isinstance(events[0], UrcEvent) and isinstance(events[1], Done)


def test_direct_push_payload():
    p = AtProtocol()
    p.set_push(0, True)
    body = b'\r\n+QIURC: "recv",0,4\r\nOK\r\n\r\n+QIURC: "recv",1,3\r\n'
    events = run(p, [body])
    assert events[0] == UrcEvent('+QIURC: "recv",0,4', b"OK\r\n", push_id=0)
    assert events[1] == UrcEvent('+QIURC: "recv",1,3')  # socket 1 is in buffer mode


def test_direct_push_payload_is_delivered_when_its_line_end_arrives():
    """The last push of a burst is not held back until some later line happens to come."""
    p = AtProtocol()
    p.set_push(0, True)
    p.receive(b'\r\n+QIURC: "recv",0,5\r\nhello')
    assert p.next_event() is None  # the line end (overrun check) is not here yet
    p.receive(b"\r\n")
    assert p.next_event() == UrcEvent('+QIURC: "recv",0,5', b"hello", push_id=0)
    assert p.next_event() is None


def test_a_push_header_with_a_negative_length_frames_no_payload():
    """`"recv",0,-1` (line noise) announces nothing: the next QIRD answer's payload is the
    QIRD's, never taken for pushed data."""
    p = AtProtocol()
    p.set_push(0, True)
    events = run(p, [b'\r\n+QIURC: "recv",0,-1\r\n'])
    assert events == [UrcEvent('+QIURC: "recv",0,-1')]
    p.send(QIRD)
    events = run(p, [qird_stream(b"abc")])
    assert isinstance(events[-1], Done) and events[-1].response.payload == b"abc"
    assert not [e for e in events if isinstance(e, UrcEvent)]


def test_late_final_after_abort_is_unknown():
    p = AtProtocol()
    p.send(Command("AT+QICLOSE=0"))
    p.abort()
    events = run(p, [b"\r\nOK\r\n"])
    assert isinstance(events[0], Unknown)


def test_rejects_injection_in_command_line():
    p = AtProtocol()
    for bad in ['AT+QIOPEN=1,0,"TCP","x\r\nAT+QPOWD=1",80', "ATZ\n", "QPOWD"]:
        try:
            p.send(Command(bad))
        except Exception as exc:  # noqa: BLE001
            assert "malformed" in str(exc)
        else:
            raise AssertionError(bad)


# -- properties -----------------------------------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=1500),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
    urcs=st.lists(st.sampled_from(URC_LINES), max_size=4),
)
def test_any_split_same_events_and_exact_payload(payload, cuts, urcs):
    stream = qird_stream(payload, urcs)
    whole = AtProtocol()
    whole.send(QIRD)
    split = AtProtocol()
    split.send(QIRD)
    a = run(whole, [stream])
    b = run(split, chunked(stream, cuts))
    assert a == b
    done = [e for e in a if isinstance(e, Done)]
    assert len(done) == 1 and done[0].response.payload == payload
    assert [e.text for e in a if isinstance(e, UrcEvent)] == list(urcs)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.sampled_from(["+QISTATE: 0,\"TCP\",\"1.2.3.4\",80,0,2,1,0,0,\"uart1\""]), max_size=3),
    inserts=st.lists(st.tuples(st.integers(0, 10), st.sampled_from(URC_LINES)), max_size=6),
    cuts=st.lists(st.integers(0, 600), max_size=20),
)
def test_urcs_at_any_line_boundary_never_change_result(lines, inserts, cuts):
    body = [*lines, "OK"]
    inserted = []
    for pos, urc in sorted(inserts, key=lambda t: t[0]):
        idx = min(pos, len(body) - 1)
        body.insert(idx, urc)
        inserted.append((idx, urc))
    stream = b"".join(b"\r\n" + line.encode() + b"\r\n" for line in body)
    p = AtProtocol()
    p.send(Command("AT+QISTATE?", prefix="+QISTATE:"))
    events = run(p, chunked(stream, cuts))
    done = [e for e in events if isinstance(e, Done)]
    assert len(done) == 1
    assert done[0].response.lines == lines
    urcs_seen = [e.text for e in events if isinstance(e, UrcEvent)]
    assert sorted(urcs_seen) == sorted(u for u in body if u in URC_LINES)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_garbage_never_raises_and_stays_bounded(data):
    p = AtProtocol(max_line=256)
    p.send(QIRD)
    run(p, [data])
    assert p.framer.buffered <= 256 + 1500


# -- URC parsing ----------------------------------------------------------------------------------
def test_parse_urcs():
    assert parse_urc('+QIURC: "recv",3') == Recv(3)
    assert parse_urc('+QIURC: "recv",0,"buff full"') == Recv(0, buff_full=True)
    assert parse_urc('+QIURC: "recv",2,5,"10.0.0.1",5000', b"hello") == Recv(
        2, 5, ("10.0.0.1", 5000), data=b"hello"
    )
    assert parse_urc('+QIURC: "closed",2') == Closed(2)
    assert parse_urc('+QIURC: "pdpdeact",1') == PdpDeact(1)
    assert parse_urc('+QIURC: "incoming",11,1,"2001:db8:1111::6",54091') == Incoming(
        11, 1, "2001:db8:1111::6", 54091
    )
    assert parse_urc("+QIOPEN: 4,566") == OpenResult(4, 566)
    assert parse_urc("+QIURC: “closed”,1") == Closed(1)


@given(st.text(max_size=200))
def test_parse_urc_never_raises(text):
    parse_urc("+QIURC: " + text)
    parse_urc("+QPING: " + text)
