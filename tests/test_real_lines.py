"""Every line shape real modules print (tests/real_lines.py, from line-shapes.md) through the framer and
the protocol: no exception, no lost place in the stream, no wrong result, whatever the split."""

from __future__ import annotations

import pytest

from modemd.at.protocol import (
    SEND_FINALS,
    AtProtocol,
    Command,
    Done,
    PromptWanted,
    Unknown,
    UrcEvent,
)
from modemd.at.urc import Registration, is_urc, parse_urc

from .real_lines import CR_ONLY_QIRD, FINALS, NOISE, PUSH_FRAME, SEND_TAILS, STREAMS

QIRD = Command("AT+QIRD=0,1500", prefix="+QIRD:", payload=True)
TRICKY = b"OK\r\n+CSQ: 1,2\r\n> \rSEND OK\n\x00\xff"  # a payload that looks like lines


def command_for(shape: str, text: str) -> Command:
    if text.startswith("AT+QISEND"):
        if shape == "E6":
            return Command(text, data=b"abcd", finals=frozenset({"OK"}), after_ok=SEND_FINALS)
        return Command(text, data=b"abcd", finals=SEND_FINALS)
    if text.startswith("AT+QIRD"):
        return QIRD
    if text == "ATI":
        return Command(text, bare_lines=True)
    if text.startswith("AT+QICLOSE") or text.startswith("AT+QISTATE=") or text in ("AT", "ATE0"):
        return Command(text)
    name = text[2:].split("=")[0].split("?")[0]
    return Command(text, prefix=name + ":")


def feed(proto: AtProtocol, pieces: list[bytes], tail: bytes = b"") -> list:
    """Feed pieces (and `tail` once the prompt asks for data), collecting every event."""
    events = []
    pieces = list(pieces)
    while pieces:
        proto.receive(pieces.pop(0))
        while (ev := proto.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, PromptWanted):
                proto.send_data()
                pieces.extend(tail[i : i + 1] for i in range(len(tail)))
    return events


def splits(wire: bytes):
    """The wire whole, in 1-byte pieces, and cut once at every byte."""
    yield [wire]
    yield [wire[i : i + 1] for i in range(len(wire))]
    for i in range(1, len(wire)):
        yield [wire[:i], wire[i:]]


def only_done(events: list) -> Done:
    done = [e for e in events if isinstance(e, Done)]
    assert len(done) == 1, events
    return done[0]


@pytest.mark.parametrize("shape,text,wire,final,lines", STREAMS, ids=[s[0] for s in STREAMS])
def test_framing_shapes_give_the_exact_answer_at_every_split(shape, text, wire, final, lines):
    tail = SEND_TAILS.get(shape, b"")
    first = None
    for pieces in splits(wire):
        proto = AtProtocol()
        cmd = command_for(shape, text)
        proto.send(cmd)
        events = feed(proto, pieces, tail)
        done = only_done(events)
        assert done.response.final == final and done.response.lines == lines, (pieces, events)
        assert proto.in_flight is None and not proto.awaiting_line_end
        if first is None:
            first = events
        assert events == first, pieces


@pytest.mark.parametrize("shape,line", NOISE, ids=[f"{s}:{t[:24]}" for s, t in NOISE])
def test_noise_at_every_line_boundary_keeps_the_answer_exact(shape, line):
    """A real module's line (not a final result) around and inside a +QIRD answer: the payload,
    the information line and the final result stay exact; the line is a URC or an unknown line."""
    if line.startswith("+QIRD:"):
        return  # the command's own prefix: part of its answer (see the +QIRD streams)
    noise = b"\r\n" + line.encode("latin-1") + b"\r\n"
    parts = [b"\r\n+QIRD: %d\r\n" % len(TRICKY) + TRICKY + b"\r\n", b"\r\nOK\r\n"]
    for at in range(len(parts) + 1):
        wire = b"".join(parts[:at]) + noise + b"".join(parts[at:])
        for pieces in (splits(wire) if at == 1 else [[wire], [bytes([b]) for b in wire]]):
            proto = AtProtocol()
            proto.send(QIRD)
            events = feed(proto, pieces)
            done = only_done(events)
            assert done.response.lines == [f"+QIRD: {len(TRICKY)}"]
            assert done.response.payload == TRICKY and done.response.final == "OK"
            others = [e for e in events if not isinstance(e, Done)]
            assert len(others) == 1 and isinstance(others[0], (UrcEvent, Unknown)), events
            assert others[0].text == line
            if isinstance(others[0], UrcEvent):
                assert is_urc(line)
                parse_urc(line)


@pytest.mark.parametrize("shape,line", NOISE, ids=[f"{s}:{t[:24]}" for s, t in NOISE])
def test_noise_during_a_send_and_a_bare_line_command(shape, line):
    noise = b"\r\n" + line.encode("latin-1") + b"\r\n"
    proto = AtProtocol()
    proto.send(Command("AT+QISEND=0,4", data=b"abcd", finals=SEND_FINALS))
    events = feed(proto, [noise + b"\r\n> "], b"\r\nSEND OK\r\n")
    assert only_done(events).response.final == "SEND OK"
    assert sum(isinstance(e, PromptWanted) for e in events) == 1
    # a `+NAME:` line of another command is never part of an ATI answer
    if line.startswith("+") or is_urc(line):
        proto = AtProtocol()
        proto.send(Command("ATI", bare_lines=True))
        events = feed(proto, [b"\r\nQuectel\r\n" + noise + b"BG96\r\n\r\nOK\r\n"])
        assert only_done(events).response.lines == ["Quectel", "BG96"]


@pytest.mark.parametrize("final", sorted(FINALS))
def test_finals_end_the_command_only_at_their_lf(final):
    proto = AtProtocol()
    proto.send(Command("AT+QISEND=0,1", data=b"x", finals=FINALS))
    proto.receive(b"\r\n" + final.encode() + b"\r")
    assert proto.next_event() is None and proto.awaiting_line_end
    proto.receive(b"\n")
    ev = proto.next_event()
    assert isinstance(ev, Done) and ev.response.final == final


def test_every_line_shape_as_a_cr_only_module_prints_it():
    """A module that ends its lines with CR only: a line completes at the next byte or, for the
    last one, when the caller reports silence; after two such line ends the module is known and
    its CR ends a line at once (until it prints a CR LF)."""
    proto = AtProtocol()
    proto.send(Command("AT"))
    assert feed(proto, [b"OK\r"]) == [] and proto.awaiting_line_end
    assert proto.end_pending_line()
    assert only_done([proto.next_event()]).response.final == "OK"
    assert not proto.framer.cr_only  # one silence is not a habit yet
    proto.send(Command("AT"))
    wire = b"".join(t.encode("latin-1") + b"\r" for _, t in NOISE) + b"OK\r"
    events = feed(proto, [wire])
    assert only_done(events).response.final == "OK" and proto.framer.cr_only
    assert len(events) == len(NOISE) + 1
    proto.send(QIRD)  # the payload follows the header's CR exactly
    done = only_done(feed(proto, [CR_ONLY_QIRD]))
    assert done.response.payload == b"he\r\nl" and done.response.final == "OK"
    proto.send(Command("AT"))
    assert only_done(feed(proto, [b"\r\nOK\r\n"])).response.final == "OK"
    assert not proto.framer.cr_only  # a CR LF again: back to waiting for the LF


def test_a_push_frame_split_anywhere_keeps_its_payload():
    for pieces in splits(PUSH_FRAME + b"\r\nOK\r\n"):
        proto = AtProtocol()
        proto.set_push(0, True)
        proto.send(Command("AT"))
        events = feed(proto, pieces)
        assert events[0] == UrcEvent('+QIURC: "recv",0,4', b"test", push_id=0)
        assert isinstance(events[1], Done) and events[1].response.final == "OK"


@pytest.mark.parametrize("line,stat", [
    ("+CGREG: 0,4", 4), ("+CEREG: 2,4", 4), ("+CEREG: 2,0", 0), ("+CREG: 0,5", 5),
    ("+CEREG: 0,1", 1), ("+CGREG: 4,4", 4),
    ('+CGREG: 4,5,"66C0","1042","0",,,,"00000000","01100000","00000000"', 5),
    ('+CREG: 2,1,"00A8","5355E8D",7', 1),
    # the URC forms: the stat first, then a quoted area code or nothing
    ('+CEREG: 5,"1A2B","01C3D4E5",7', 5), ("+CEREG: 5", 5), ("+CREG: 1", 1), ("+CEREG: 1,,,7", 1),
])
def test_registration_lines_give_the_stat_in_both_forms(line, stat):
    """A read reply printed on its own (C1-C4) must not read its <n> as the stat: `+CGREG: 0,5`
    is registered (5), not "not registered" (0)."""
    urc = parse_urc(line)
    assert isinstance(urc, Registration) and urc.stat == stat
