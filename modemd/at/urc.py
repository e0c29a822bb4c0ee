"""Unsolicited result codes: which lines are URCs, and their typed values.

A URC is recognised by its prefix at a line boundary. Fields are parsed as quoted strings or bare tokens,
never split on ':' (IPv6 literals), and typographic quotes from older manuals are accepted.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Lines that are URCs when no command in flight claims them as its response (see protocol.py).
URC_PREFIXES = (
    "+QIURC:",
    "+QIOPEN:",
    "+QPING:",
    "+QNTP:",
    "+QNTTP:",
    "+QIACTEX:",
    "+QIDEACTEX:",
    "+CPIN:",
    "+QIND:",
    "+QUSIM:",
    "+CFUN:",
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+C5GREG:",
    "+CGEV:",
    "+QCSCON:",
    "+QSIMSTAT:",
    "+QNETDEVSTATUS:",
    # real modules' chatter that modemd has no use for (line-shapes.md B-C): recognised as URCs at
    # every line boundary so that they never end up in a response, then only counted
    "+QGPSURC:",
    "+QNITZ:",
    "+CTZE:",
    "+CTZV:",
    "+CDSI:",
    "+CMTI:",
    "+QMTSTAT:",
    "+QMTRECV:",
)
URC_WORDS = ("RDY", "APP RDY", "POWERED DOWN", "NORMAL POWER DOWN", "RING", "Call Ready", "SMS Ready")


def is_urc(text: str) -> bool:
    return text.startswith(URC_PREFIXES) or text in URC_WORDS


_QUOTES = re.compile('(["\u201c\u201d])')  # a quote of either kind, kept by re.split


def split_fields(text: str, *, keep_quotes: bool = False) -> list[str]:
    """Split 'a,"b,c",d' into ['a', 'b,c', 'd']; quotes (also “ ”) are removed, or kept with
    `keep_quotes` (where a quoted field must not be mistaken for a number). Every quote character
    opens or closes a quoted run; commas inside one do not split. Works on runs between quotes
    (str.split in C), not on characters: every URC and radio line goes through here."""
    if '"' not in text and "\u201c" not in text and "\u201d" not in text:
        return [f.strip() for f in text.split(",")]
    fields: list[str] = []
    cur: list[str] = []
    quoted = False
    for i, run in enumerate(_QUOTES.split(text)):
        if i % 2:  # a quote character (re.split puts the captured separators at odd indexes)
            quoted = not quoted
            if keep_quotes:
                cur.append(run)
        elif quoted:
            cur.append(run)
        else:
            first, *rest = run.split(",")
            cur.append(first)
            for part in rest:
                fields.append("".join(cur).strip())
                cur = [part]
    fields.append("".join(cur).strip())
    return fields


def after_prefix(text: str) -> str:
    return text.split(":", 1)[1].strip() if ":" in text else ""


def ip_text(field: str) -> str:
    """An address field in one spelling: IP literals canonical (IPv6 lower case, `::` compressed,
    brackets dropped: `"2409:8D1E:750C:DFA4::1"` and `"0:0:0:0:0:0:0:1"` name the same host as
    the local side writes it); anything else (a host name, noise) is left as it is."""
    text = field.strip()
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return text


def to_int(field: str) -> int | None:
    try:
        return int(field)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Recv:
    connect_id: int
    length: int | None = None
    remote: tuple[str, int] | None = None
    buff_full: bool = False
    data: bytes | None = None  # direct push only


@dataclass(frozen=True, slots=True)
class Closed:
    connect_id: int


@dataclass(frozen=True, slots=True)
class Incoming:
    connect_id: int
    server_id: int
    remote_ip: str
    remote_port: int


@dataclass(frozen=True, slots=True)
class IncomingFull:
    server_id: int | None = None


@dataclass(frozen=True, slots=True)
class PdpDeact:
    context_id: int


@dataclass(frozen=True, slots=True)
class OpenResult:
    connect_id: int
    result: int


@dataclass(frozen=True, slots=True)
class DnsGipHeader:
    result: int
    count: int
    ttl: int


@dataclass(frozen=True, slots=True)
class DnsGipAddress:
    address: str


@dataclass(frozen=True, slots=True)
class PingReply:
    result: int
    address: str = ""
    size: int = 0
    time_ms: int = 0
    ttl: int = 0


@dataclass(frozen=True, slots=True)
class PingSummary:
    result: int
    sent: int
    received: int
    lost: int
    min_ms: int
    max_ms: int
    avg_ms: int


@dataclass(frozen=True, slots=True)
class NtpResult:
    result: int
    time: str


@dataclass(frozen=True, slots=True)
class ActExResult:
    context_id: int
    result: int
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeactExResult:
    context_id: int
    result: int


@dataclass(frozen=True, slots=True)
class ModuleReady:
    """`RDY` (or `APP RDY`): the module has (re)booted; every socket is gone."""

    text: str


@dataclass(frozen=True, slots=True)
class PoweredDown:
    text: str


@dataclass(frozen=True, slots=True)
class SimState:
    state: str


@dataclass(frozen=True, slots=True)
class Registration:
    """A +CREG/+CGREG/+CEREG/+C5GREG line, URC or read response (27.007 §7.2, §10.1.20/22).

    `n` is the read response's <n> (None in a URC; a one-field line is always a URC, even when
    the channel handed it over as part of our query's answer); `area` the lac/tac and `ci` the cell id as
    printed (hex strings), `act` the access technology, `fields` how many fields the line had."""

    kind: str  # "CREG" | "CGREG" | "CEREG" | "C5GREG"
    stat: int | None
    n: int | None = None
    area: str = ""
    ci: str = ""
    act: int | None = None
    fields: int = 0

    @property
    def registered(self) -> bool:
        return self.stat in (1, 5)


@dataclass(frozen=True, slots=True)
class OtherUrc:
    """A line with a URC prefix that modemd does not act on (e.g. `+QIND: PB DONE`)."""

    text: str


Urc = (
    Recv | Closed | Incoming | IncomingFull | PdpDeact | OpenResult | DnsGipHeader | DnsGipAddress
    | PingReply | PingSummary | NtpResult | ActExResult | DeactExResult | ModuleReady | PoweredDown
    | SimState | Registration | OtherUrc
)


#: the direct-push header as the modules print it, `+QIURC: "recv",<id>,<len>` (UDP adds fields):
#: one match per downloaded frame instead of the general field split. Any other spelling (other
#: quotes or spaces, a noisy digit) takes the general path, which reads the same numbers from
#: every line this matches.
_RECV_HEAD = re.compile(r'\+QIURC: "recv",([0-9]+),([0-9]+)(?=,|\Z)')


def recv_header(text: str) -> tuple[int | None, int | None] | None:
    """(connect_id, length) of a `+QIURC: "recv",id,len...` line (None for a field that is not a
    number), None for any other line. The protocol asks this once per line with a URC prefix."""
    m = _RECV_HEAD.match(text)
    if m is not None:
        return int(m[1]), int(m[2])
    if not text.startswith("+QIURC:"):
        return None
    f = split_fields(after_prefix(text))
    if len(f) >= 3 and f[0] == "recv":
        return to_int(f[1]), to_int(f[2])
    return None


def parse_urc(text: str, data: bytes | None = None) -> Urc:
    """Typed value of a URC line (and its direct-push payload); never raises. Pushed frames do
    not come here on the data path: the protocol parsed their header (`recv_header`) and the
    channel hands the payload to the socket layer without a URC object."""
    try:
        return _parse(text, data)
    except (ValueError, IndexError):
        return OtherUrc(text)


def _parse(text: str, data: bytes | None) -> Urc:
    if text in ("RDY", "APP RDY"):
        return ModuleReady(text)
    if text in ("POWERED DOWN", "NORMAL POWER DOWN"):
        return PoweredDown(text)
    head = text.split(":", 1)[0]
    f = split_fields(after_prefix(text))
    parser = _PARSERS.get(head)
    return parser(text, f, data) if parser else OtherUrc(text)


def _qiurc(text: str, f: list[str], data: bytes | None) -> Urc:
    kind = f[0]
    if kind == "recv":
        return _recv(f, data)
    if kind == "closed":
        return Closed(int(f[1]))
    if kind == "incoming":
        return Incoming(int(f[1]), int(f[2]), ip_text(f[3]), int(f[4]))
    if kind == "incoming full":
        return IncomingFull(to_int(f[1]) if len(f) > 1 else None)
    if kind == "pdpdeact":
        return PdpDeact(int(f[1]))
    if kind == "dnsgip":
        if len(f) >= 4 and to_int(f[1]) is not None:
            return DnsGipHeader(int(f[1]), int(f[2]), int(f[3]))
        if len(f) == 2 and to_int(f[1]) is not None:
            return DnsGipHeader(int(f[1]), 0, 0)
        return DnsGipAddress(ip_text(f[1]))
    return OtherUrc(text)


def _recv(f: list[str], data: bytes | None) -> Recv:
    cid = int(f[1])
    if len(f) >= 3 and f[2] == "buff full":
        return Recv(cid, buff_full=True)
    length = int(f[2]) if len(f) >= 3 else None
    remote = (ip_text(f[3]), int(f[4])) if len(f) >= 5 else None
    return Recv(cid, length, remote, data=data)


def _qping(text: str, f: list[str], data: bytes | None) -> Urc:
    if len(f) >= 7:
        return PingSummary(*(int(x) for x in f[:7]))
    if len(f) >= 5:
        return PingReply(int(f[0]), ip_text(f[1]), int(f[2]), int(f[3]), int(f[4]))
    return PingReply(int(f[0]))


def _qiactex(text: str, f: list[str], data: bytes | None) -> Urc:
    return ActExResult(int(f[0]), int(f[1]), tuple(ip_text(x) for x in f[3:] if x))


def _raw_fields(text: str) -> list[str]:
    """Split on commas outside quotes, keeping the quotes (a quoted field is never the stat)."""
    return split_fields(text, keep_quotes=True)


def _bare_number(raw: str) -> bool:
    return raw.isascii() and raw.isdigit()


def parse_registration(text: str, *, response: bool = False) -> Registration:
    """One parser for registration lines, read responses and URCs alike, 1 to 11 fields.

    A read response is `<n>,<stat>[,<lac>,<ci>[,<AcT>...]]`, a URC `<stat>[,<lac>,<ci>[,<AcT>...]]`:
    the same leading number means <n> in one and <stat> in the other (line-shapes C1-C4). A line
    that answers our query (`response`) is the read form. Else the field count and the second
    field decide: the read form has a bare <stat> there, a URC a quoted area code, an empty field
    or nothing. Fields beyond AcT (rac, cause, PSM timers) are counted, never interpreted."""
    kind = text[1 : text.index(":")].strip()
    raw = _raw_fields(after_prefix(text))
    values = split_fields(after_prefix(text))
    read_form = len(raw) >= 2 and (response or _bare_number(raw[1]))
    n = to_int(values[0]) if read_form else None
    rest = values[1:] if read_form else values
    stat = to_int(rest[0]) if rest and rest[0] else None
    return Registration(
        kind=kind,
        stat=stat,
        n=n,
        area=rest[1] if len(rest) > 1 else "",
        ci=rest[2] if len(rest) > 2 else "",
        act=to_int(rest[3]) if len(rest) > 3 and rest[3] else None,
        fields=len(raw),
    )


def _registration(text: str, f: list[str], data: bytes | None) -> Urc:
    return parse_registration(text)


_PARSERS = {
    "+QIURC": _qiurc,
    "+QIOPEN": lambda t, f, d: OpenResult(int(f[0]), int(f[1])),
    "+QPING": _qping,
    "+QNTP": lambda t, f, d: NtpResult(int(f[0]), f[1] if len(f) > 1 else ""),
    "+QNTTP": lambda t, f, d: NtpResult(int(f[0]), f[1] if len(f) > 1 else ""),
    "+QIACTEX": _qiactex,
    "+QIDEACTEX": lambda t, f, d: DeactExResult(int(f[0]), int(f[1])),
    "+CPIN": lambda t, f, d: SimState(f[0]),
    "+CREG": _registration,
    "+CGREG": _registration,
    "+CEREG": _registration,
    "+C5GREG": _registration,
}
