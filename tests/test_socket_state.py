"""The module socket's sans-IO state machine and the pure exactly-once / download-check rules
(modemd/sockets/state.py): no trio, no emulator."""

from __future__ import annotations

import itertools

import pytest

from modemd.sockets.state import (
    TRANSITIONS,
    Event,
    LocalProtocolError,
    SendVerdict,
    SocketMachine,
    SocketState,
    download_check,
    send_verdict,
    transition,
)

S, E = SocketState, Event


def test_every_listed_transition_and_nothing_else():
    for state, event in itertools.product(SocketState, Event):
        if (state, event) in TRANSITIONS:
            assert transition(state, event) is TRANSITIONS[(state, event)]
        else:
            with pytest.raises(LocalProtocolError, match=f"{event.value} is not allowed"):
                transition(state, event)


@pytest.mark.parametrize("path, end", [
    ([E.OPENED, E.CLOSE, E.CLOSED], S.CLOSED),                              # local close
    ([E.OPENED, E.REMOTE_CLOSE, E.EOF, E.CLOSE, E.CLOSED], S.CLOSED),       # remote close, drained
    ([E.OPENED, E.FAIL, E.CLOSE, E.CLOSED], S.CLOSED),                      # abnormal end
    ([E.CLOSE, E.CLOSED], S.CLOSED),                                        # open failed
    ([E.OPENED, E.REMOTE_CLOSE, E.FAIL], S.FAILED),                         # broken while draining
    ([E.OPENED, E.CLOSE, E.REMOTE_CLOSE, E.FAIL, E.CLOSED, E.FAIL], S.CLOSED),  # echo, late fail
])
def test_life_cycles(path, end):
    machine = SocketMachine()
    for event in path:
        machine.handle(event)
    assert machine.state is end


@pytest.mark.parametrize("state, event", [
    (S.OPENING, E.EOF),       # no EOF before the socket was open
    (S.OPEN, E.EOF),          # no EOF without the remote's close: never a clean EOF by mistake
    (S.FAILED, E.EOF),        # a failed socket never ends cleanly
    (S.CLOSING, E.CLOSE),     # no second QICLOSE
    (S.CLOSED, E.CLOSE),
    (S.CLOSED, E.OPENED),     # a closed socket is never reused
    (S.OPEN, E.CLOSED),       # QICLOSE ended without being written
])
def test_illegal_events(state, event):
    with pytest.raises(LocalProtocolError):
        SocketMachine(state).handle(event)


def test_labels_stay_what_modemctl_shows():
    """snapshot()["state"]: opening, open, remote_closed, closing, closed (as before the machine)."""
    machine = SocketMachine()
    assert machine.label() == "opening"
    machine.handle(E.OPENED)
    assert machine.label() == "open"
    machine.handle(E.FAIL)
    assert machine.label() == "open" and machine.failed
    machine = SocketMachine(S.OPEN)
    machine.handle(E.REMOTE_CLOSE)
    assert machine.label() == "remote_closed"
    machine.handle(E.EOF)
    assert machine.label() == "remote_closed" and machine.eof
    machine.handle(E.CLOSE)
    assert machine.label() == "closing" and machine.closing
    machine.handle(E.CLOSED)
    assert machine.label() == "closed"


def test_remote_close_is_remembered_across_states():
    machine = SocketMachine(S.OPEN)
    machine.handle(E.REMOTE_CLOSE)
    machine.handle(E.FAIL)
    assert machine.remote_closed and machine.label() == "remote_closed"
    machine.handle(E.CLOSE)
    assert machine.remote_closed
    machine = SocketMachine(S.OPEN)
    machine.handle(E.CLOSE)
    machine.handle(E.REMOTE_CLOSE)  # our own QICLOSE echoed (RG500U): not the remote's close
    assert not machine.remote_closed and machine.label() == "closing"


@pytest.mark.parametrize("confirmed, chunk, total, verdict", [
    (0, 1460, 0, SendVerdict.NOT_TAKEN),         # lost before the module took it: send again
    (0, 1460, 1460, SendVerdict.TAKEN),          # SEND OK lost: the module has it
    (14600, 1460, 14600, SendVerdict.NOT_TAKEN),
    (14600, 1460, 16060, SendVerdict.TAKEN),
    (14600, 1460, 15000, SendVerdict.INCONSISTENT),  # part of a chunk: never guess
    (14600, 1460, 16061, SendVerdict.INCONSISTENT),  # more than was ever sent
    (14600, 1460, 14599, SendVerdict.INCONSISTENT),  # less than SEND OK confirmed
])
def test_send_verdict(confirmed, chunk, total, verdict):
    assert send_verdict(confirmed, chunk, total) is verdict


def test_download_check():
    assert download_check(5000, 5000, 0).ok
    assert download_check(5000, 8000, 3000).ok            # the rest is still in the module
    lost = download_check(5000, 8000, 1500)                # 1500 bytes left it and never arrived
    assert not lost.ok and "handed out 6500" in lost.detail
    assert not download_check(5000, 4000, 0).ok            # more arrived than it received
    assert download_check(5000, 5000, 0, at_eof=True).ok
    assert not download_check(5000, 5100, 100, at_eof=True).ok
