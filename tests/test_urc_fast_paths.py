"""The URC parsers' fast paths read exactly what the general paths read (issue 16).

`split_fields` works on runs between quotes, and the direct-push header `+QIURC: "recv",id,len` is
matched by one regex instead of a field split: both exist only for speed, so each is checked here
against a plain reference (the character loop the splitter used to be, and the general parser),
on random lines and on lines built from the tokens those parsers care about.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from modemd.at import urc
from modemd.at.urc import (
    OtherUrc,
    Recv,
    after_prefix,
    parse_urc,
    recv_header,
    split_fields,
    to_int,
)

MANY = settings(max_examples=400, deadline=None)


def reference_split(text: str, *, keep_quotes: bool = False) -> list[str]:
    """split_fields as a character loop (its definition)."""
    fields: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in text:
        if ch in '"\u201c\u201d':
            quoted = not quoted
            if not keep_quotes:
                continue
        if ch == "," and not quoted:
            fields.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    fields.append("".join(cur).strip())
    return fields


def reference_header(text: str) -> tuple[int | None, int | None] | None:
    """recv_header by the general field split only."""
    if not text.startswith("+QIURC:"):
        return None
    f = reference_split(after_prefix(text))
    if len(f) >= 3 and f[0] == "recv":
        return to_int(f[1]), to_int(f[2])
    return None


def reference_parse(text: str, data: bytes | None) -> object:
    """parse_urc by the general parser only."""
    try:
        return urc._parse(text, data)
    except (ValueError, IndexError):
        return OtherUrc(text)


TOKENS = st.sampled_from([
    "+QIURC:", "+QIURC: ", "+QIURC:  ", '"recv"', "\u201crecv\u201d", '"recv', "recv", '"closed"',
    ",", ",,", '"', "\u201c", "\u201d", " ", "0", "1", "11", "1500", "007", "\u0661", "1_0", "+1",
    "-1", '"buff full"', '"10.0.0.1"', '"2409:8D1E::1"', "5000", "\r", "\n", "x", ":",
])
LINES = st.lists(TOKENS, max_size=12).map("".join)
NUMBERS = st.sampled_from(["0", "11", "1500", "007", "\u0661", "1_0", "+1", "-1", " 1", "1 ", "",
                           "1x", "12\n", '"1"', '"buff full"'])
TAILS = st.sampled_from(["", ",", ' ,"10.0.0.1",5000', ',"10.0.0.1",5000', "x", " ", "\n", '"',
                         ',"a,b', ":"])
RECV_LINES = st.tuples(
    st.sampled_from(['+QIURC: "recv",', "+QIURC: \u201crecv\u201d,", '+QIURC:"recv",',
                     '+QIURC: "recv" ,']),
    NUMBERS, st.sampled_from([",", ", ", ";"]), NUMBERS, TAILS,
).map("".join)
ANY_TEXT = st.text(alphabet=st.characters(codec="latin-1") | st.sampled_from('"\u201c\u201d,'),
                   max_size=60)


@given(text=ANY_TEXT | LINES, keep=st.booleans())
@MANY
@example(text='a,"b,c",d', keep=False)
@example(text='"recv",0,1500', keep=True)
@example(text='\u201cx,y\u201d,,"', keep=False)
@example(text="", keep=False)
def test_split_fields_is_the_character_loop(text, keep):
    assert split_fields(text, keep_quotes=keep) == reference_split(text, keep_quotes=keep)


@given(text=LINES | RECV_LINES | ANY_TEXT.map(lambda t: '+QIURC: "recv",' + t),
       data=st.none() | st.binary(max_size=4))
@MANY
@example(text='+QIURC: "recv",0,1500', data=b"ab")
@example(text='+QIURC: "recv",3,12,"10.0.0.1",5000', data=b"ab")
@example(text='+QIURC: "recv",3,12\n', data=b"ab")
@example(text='+QIURC: "recv",3,"buff full"', data=None)
@example(text='+QIURC: "recv",0,1500 ', data=None)
@example(text='+QIURC: "recv",0,15,', data=None)
@example(text='+QIURC: "recv",0,15x', data=None)
def test_recv_header_fast_path_reads_what_the_general_path_reads(text, data):
    assert recv_header(text) == reference_header(text)
    assert parse_urc(text, data) == reference_parse(text, data)


def test_the_push_header_as_printed_takes_the_fast_path():
    """The regex matches the modules' own spelling (else the fast path is dead code)."""
    assert urc._RECV_HEAD.match('+QIURC: "recv",11,1500')
    assert parse_urc('+QIURC: "recv",11,1500', b"x") == Recv(11, 1500, None, False, b"x")
    assert recv_header('+QIURC: "recv",2,1460,"10.0.0.1",5000') == (2, 1460)
