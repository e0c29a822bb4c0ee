"""The life cycle of one module socket as a sans-IO state machine (in the manner of h11's _state.py).

No trio, no I/O, no clock: `ModuleSocket` feeds it events (`SocketMachine.handle`) and reads its
state; `transition` is the one function that says what an event does in a state, and an event the
table does not list is a bug (`LocalProtocolError`), never a silent flag change.

States:
  OPENING        QIOPEN written, its +QIOPEN URC not yet seen
  OPEN           connected: data flows both ways
  REMOTE_CLOSED  the module reported "closed": the module may still hold data (draining)
  DRAINED        remote closed and every byte was read: the local side got its EOF
  FAILED         ended abnormally (a deadline, a broken frame, an uncertain send ...): the local
                 client gets a reset, never an EOF
  CLOSING        AT+QICLOSE written (by us)
  CLOSED         AT+QICLOSE ended (answered: the connect_id is free; unanswered: quarantined)

The plain counters (bytes, SEND FAIL, mode switches) and the receive hints stay on ModuleSocket;
the access mode (push or buffer) is the module's per-socket setting, kept beside the state.

Also here: the pure decisions of the exactly-once upload and the download cross-checks, so the
rules can be tested without a module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SocketState(enum.Enum):
    OPENING = "opening"
    OPEN = "open"
    REMOTE_CLOSED = "remote_closed"
    DRAINED = "drained"
    FAILED = "failed"
    CLOSING = "closing"
    CLOSED = "closed"


class Event(enum.Enum):
    OPENED = "opened"              # +QIOPEN: id,0 (or an incoming connection was accepted)
    REMOTE_CLOSE = "remote_close"  # +QIURC: "closed",id
    EOF = "eof"                    # remote closed and the module's buffer is read empty
    FAIL = "fail"                  # an abnormal end (the first failure is kept)
    CLOSE = "close"                # AT+QICLOSE about to be written
    CLOSED = "closed"              # AT+QICLOSE ended (answered or given up)


S, E = SocketState, Event

#: (state, event) -> next state. Anything else is illegal.
TRANSITIONS: dict[tuple[SocketState, Event], SocketState] = {
    (S.OPENING, E.OPENED): S.OPEN,
    (S.OPENING, E.FAIL): S.FAILED,
    (S.OPENING, E.CLOSE): S.CLOSING,
    (S.OPEN, E.REMOTE_CLOSE): S.REMOTE_CLOSED,
    (S.OPEN, E.FAIL): S.FAILED,
    (S.OPEN, E.CLOSE): S.CLOSING,
    (S.REMOTE_CLOSED, E.REMOTE_CLOSE): S.REMOTE_CLOSED,
    (S.REMOTE_CLOSED, E.EOF): S.DRAINED,
    (S.REMOTE_CLOSED, E.FAIL): S.FAILED,
    (S.REMOTE_CLOSED, E.CLOSE): S.CLOSING,
    (S.DRAINED, E.REMOTE_CLOSE): S.DRAINED,
    (S.DRAINED, E.EOF): S.DRAINED,
    (S.DRAINED, E.FAIL): S.FAILED,
    (S.DRAINED, E.CLOSE): S.CLOSING,
    (S.FAILED, E.REMOTE_CLOSE): S.FAILED,
    (S.FAILED, E.FAIL): S.FAILED,
    (S.FAILED, E.CLOSE): S.CLOSING,
    (S.CLOSING, E.REMOTE_CLOSE): S.CLOSING,  # the echo of our own QICLOSE (RG500U close/mode=1)
    (S.CLOSING, E.FAIL): S.CLOSING,          # a data task ended while the QICLOSE ran
    (S.CLOSING, E.CLOSED): S.CLOSED,
    (S.CLOSED, E.REMOTE_CLOSE): S.CLOSED,    # a late URC
    (S.CLOSED, E.FAIL): S.CLOSED,            # a data task ended after the close
}


class LocalProtocolError(Exception):
    """An event the state machine does not allow in its state (a bug in the socket layer)."""


def transition(state: SocketState, event: Event) -> SocketState:
    """The one transition function: the next state, or LocalProtocolError."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise LocalProtocolError(f"{event.value} is not allowed in state {state.value}") from None


class SocketMachine:
    """The state of one module socket plus the one fact that outlives a state change: whether
    the remote closed (a socket that failed or is closing after "closed" still knows it)."""

    __slots__ = ("state", "remote_closed")

    def __init__(self, state: SocketState = SocketState.OPENING) -> None:
        self.state = state
        self.remote_closed = False

    def handle(self, event: Event) -> SocketState:
        before = self.state
        self.state = transition(before, event)
        if event is Event.REMOTE_CLOSE and before not in (SocketState.CLOSING, SocketState.CLOSED):
            self.remote_closed = True  # not the echo of our own QICLOSE
        return self.state

    @property
    def closing(self) -> bool:
        """QICLOSE written or done: no more data commands, no second QICLOSE."""
        return self.state in (SocketState.CLOSING, SocketState.CLOSED)

    @property
    def failed(self) -> bool:
        return self.state is SocketState.FAILED

    @property
    def eof(self) -> bool:
        return self.state is SocketState.DRAINED

    def label(self) -> str:
        """The state as `modemctl connections` has always shown it: opening, open,
        remote_closed, closing or closed (a failed socket shows what it was until it is closed)."""
        state = self.state
        if state in (SocketState.OPEN, SocketState.FAILED):
            return "remote_closed" if self.remote_closed else "open"
        if state is SocketState.DRAINED:
            return "remote_closed"
        return state.value


# -- exactly-once upload ---------------------------------------------------------------------------
class SendVerdict(enum.Enum):
    NOT_TAKEN = "not_taken"        # the module does not have the chunk: send it again
    TAKEN = "taken"                # the module has the whole chunk: count it, go on with the next
    INCONSISTENT = "inconsistent"  # neither: reset the connection, never guess


def send_verdict(confirmed: int, chunk: int, total_send_length: int) -> SendVerdict:
    """After an uncertain QISEND of `chunk` bytes, with `confirmed` bytes of this connection known
    to be in the module (SEND OK), the module's `total_send_length` (AT+QISEND=id,0) says which."""
    if total_send_length == confirmed:
        return SendVerdict.NOT_TAKEN
    if total_send_length == confirmed + chunk:
        return SendVerdict.TAKEN
    return SendVerdict.INCONSISTENT


# -- download integrity ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReadCheck:
    ok: bool
    detail: str = ""


def download_check(
    delivered: int, total_receive_length: int, unread: int, *, at_eof: bool = False
) -> ReadCheck:
    """AT+QIRD=id,0 against the bytes this socket got from the module (QIRD answers and direct
    push), asked in buffer mode (no pushed byte on its way): what the module received and no
    longer holds must be exactly what we got. More: bytes left the module and never arrived (a
    QIRD answer lost on the line, a dropped frame): reset. At EOF nothing may be left unread.

    have_read_length is not used: whether a module counts bytes it pushed after a switch back
    to push mode there is not documented (the emulator does), total - unread holds either way."""
    handed_out = total_receive_length - unread
    if handed_out != delivered:
        return ReadCheck(False, f"the module handed out {handed_out} bytes "
                                f"(received {total_receive_length}, {unread} unread), "
                                f"{delivered} arrived")
    if at_eof and unread:
        return ReadCheck(False, f"{unread} bytes unread at EOF")
    return ReadCheck(True)


__all__ = [
    "TRANSITIONS", "Event", "LocalProtocolError", "ReadCheck", "SendVerdict", "SocketMachine",
    "SocketState", "download_check", "send_verdict", "transition",
]
