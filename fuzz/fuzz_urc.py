#!/usr/bin/env python3
"""Fuzz the URC parsers: modemd.at.urc.parse_urc / split_fields / recv_* on arbitrary text.

The input is read as one line of latin-1 text (what the framer hands out) and, separately, as UTF-8
with replacement characters (typographic quotes, any code point). Byte 0 chooses whether a direct-push
payload goes with the line. Nothing may raise; parse_urc always returns one of the Urc types and
split_fields always returns at least one field, none of them containing a quote character.
"""

from __future__ import annotations

import sys

from _common import instrumented, main

with instrumented():
    from modemd.at.urc import (
        Urc,
        after_prefix,
        is_urc,
        parse_urc,
        recv_header,
        split_fields,
    )

URC_TYPES = Urc.__args__
QUOTES = '"“”'


def check(text: str, payload: bytes | None) -> None:
    is_urc(text)
    fields = split_fields(text)
    assert fields and all(isinstance(f, str) for f in fields)
    assert not any(q in f for f in fields for q in QUOTES), fields
    after_prefix(text)
    header = recv_header(text)
    assert header is None or all(x is None or isinstance(x, int) for x in header)
    assert isinstance(parse_urc(text, payload), URC_TYPES)
    # also with a URC prefix in front, so arbitrary field lists reach every per-URC parser
    for prefix in ('+QIURC: "recv",', "+QIURC: ", "+QPING: ", "+QIOPEN: ", "+QIACTEX: ", "+CEREG: "):
        assert isinstance(parse_urc(prefix + text, payload), URC_TYPES)


def test_one_input(data: bytes) -> None:
    payload = data[1:9] if data[:1] and data[0] & 1 else None
    check(data.decode("latin-1"), payload)
    check(data.decode("utf-8", "replace"), payload)


if __name__ == "__main__":
    main(test_one_input)
    sys.exit(0)
