#!/usr/bin/env python3
"""Fuzz the sans-IO AT reader: modemd.at.framer.Framer under modemd.at.protocol.AtProtocol.

Input layout: byte 0 picks the first command in flight (low nibble), the connect_ids in direct-push
mode (bits 4-6) and small limits (bit 7: max_line 64, max_payload 1500); byte 1 picks the mode (bit 0)
and seeds how the rest is cut into chunks (bits 1-7); the rest is what the "module" sends. Whenever a
command ends, the next one of COMMANDS is sent, so QIRD (prefix + payload), QISEND (prompt), two-stage
BC25 commands and bare-line commands are all in flight at some point. Modes:

* silence (bit 0 clear): after some chunks that leave a CR-terminated line pending, the "channel"
  reports silence (end_pending_line), as it does for a CR-only module, and goes on;
* split (bit 0 set): the stream is read whole and cut into chunks; both must give the same events
  (a line is complete at its LF, or the byte after a CR-only end: never decided on a chunk boundary).

Checked after every chunk:

* no exception escapes receive()/next_event()/send()/send_data()/end_pending_line() (nor parse_urc);
* framer.buffered <= max_line + max_payload (memory stays bounded whatever the module says);
* every Done carries a final result that fits its command, and the command is no longer in flight;
* a prompt is only reported for a command with data; URC payloads only for push-mode connect_ids;
* a pending line means the framer holds bytes, and reporting silence completes it (it is no longer
  pending) without losing the command in flight's place.
"""

from __future__ import annotations

import sys

from _common import Input, chunks, instrumented, main

with instrumented():
    from modemd.at import protocol as protocol_mod
    from modemd.at.protocol import (
        ERROR_FINALS,
        ERROR_PREFIXES,
        OK_FINALS,
        SEND_FINALS,
        AtProtocol,
        Command,
        Done,
        PromptWanted,
        Unknown,
        UrcEvent,
    )
    from modemd.at.urc import Urc, is_urc, parse_urc

#: the largest payload the protocol lets a line announce by default
MAX_PAYLOAD = getattr(protocol_mod, "MAX_PAYLOAD", 1500)
URC_TYPES = Urc.__args__

COMMANDS = (
    Command("AT+QIRD=0,1500", prefix="+QIRD:", payload=True),
    Command("AT+QISEND=0,5", data=b"hello", finals=SEND_FINALS),
    Command("AT+QIRD=1", prefix="+QIRD:", payload=True),
    Command("ATI", bare_lines=True),
    Command("AT+QISEND=1,3", data=b"\r\n>", finals=OK_FINALS, after_ok=SEND_FINALS),
    Command("AT+QICLOSE=0", after_ok=frozenset({"CLOSE OK"})),
    Command("AT+QISTATE?", prefix="+QISTATE:"),
    Command('AT+QIOPEN=1,0,"TCP","example.com",80,0,1'),
    Command("AT+QIRD=0,0", prefix="+QIRD:"),
    Command("AT"),
    Command("AT+CGMM", bare_lines=True),
    Command("AT+QISEND=2,1500", data=bytes(1500), finals=SEND_FINALS),
)


def check_done(ev: Done, cmd: Command, proto: AtProtocol, max_payload: int) -> None:
    resp = ev.response
    final = resp.final
    assert final, f"Done without a final result: {resp!r}"
    assert resp.command is cmd, (resp.command, cmd)
    assert proto.in_flight is None
    ok = final in cmd.finals or final in ERROR_FINALS or final.startswith(ERROR_PREFIXES)
    ok = ok or (cmd.after_ok is not None and final in cmd.after_ok)
    assert ok, f"{final!r} is not a final result of {cmd.text}"
    for line in resp.lines:
        assert cmd.bare_lines or (cmd.prefix and line.startswith(cmd.prefix)), line
    if resp.payload is not None:
        assert cmd.payload
        assert len(resp.payload) <= max_payload * max(1, len(resp.lines)), len(resp.payload)


def run(head: int, pieces, silence: int | None) -> list:
    """Feed `pieces`; with `silence`, report silence after pending lines (every n-th chance)."""
    small = bool(head & 0x80)
    max_line, max_payload = (64, 1500) if small else (4096, MAX_PAYLOAD)
    proto = AtProtocol(max_line, max_payload) if small else AtProtocol()
    push_ids = {cid for cid in range(3) if head & (0x10 << cid)}
    for cid in push_ids:
        proto.set_push(cid, True)
    index = head & 0x0F
    cmd = COMMANDS[index % len(COMMANDS)]
    wire = proto.send(cmd)
    assert wire.endswith(b"\r") and b"\n" not in wire
    bound = max_line + max_payload
    out: list = []
    chance = 0

    def drain() -> None:
        nonlocal cmd, index
        while (ev := proto.next_event()) is not None:
            out.append(ev)
            if isinstance(ev, Done):
                check_done(ev, cmd, proto, max_payload)
                index += 1
                cmd = COMMANDS[index % len(COMMANDS)]
                proto.send(cmd)
            elif isinstance(ev, PromptWanted):
                assert proto.in_flight is cmd and cmd.data is not None
                assert proto.send_data() == cmd.data
            elif isinstance(ev, UrcEvent):
                assert is_urc(ev.text), ev.text
                if ev.payload is not None:
                    assert push_ids, "URC payload without a push-mode connect_id"
                    assert 0 < len(ev.payload) <= max_payload
                assert isinstance(parse_urc(ev.text, ev.payload), URC_TYPES)
            else:
                assert isinstance(ev, Unknown), ev

    for piece in pieces:
        proto.receive(piece)
        drain()
        assert proto.framer.buffered <= bound, (
            f"framer holds {proto.framer.buffered} bytes > {bound}"
        )
        if proto.awaiting_line_end:
            assert proto.framer.buffered > 0
            chance += 1
            if silence is not None and chance % silence == 0:
                before = proto.in_flight
                assert proto.end_pending_line()
                drain()
                assert not proto.awaiting_line_end
                assert proto.in_flight is before or proto.in_flight is cmd
        else:
            assert not proto.end_pending_line()
    out.append(("end", proto.awaiting_line_end, proto.framer.buffered, proto.in_flight))
    # the channel's recovery paths must work from any state
    proto.abort()
    proto.send(COMMANDS[0])
    proto.reset()
    assert proto.framer.buffered == 0 and proto.in_flight is None and not proto.awaiting_line_end
    return out


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    head = inp.byte()
    seed = inp.byte()
    stream = inp.rest()
    if seed & 1:
        whole = run(head, [stream], None)
        split = run(head, chunks(stream, seed >> 1), None)
        assert split == whole, "a chunk boundary changed the events"
    else:
        run(head, chunks(stream, seed >> 1), 1 + (seed >> 1) % 3)


if __name__ == "__main__":
    main(test_one_input)
    sys.exit(0)
