"""The emulator survives whatever bytes a buggy daemon sends it."""

import random
import string

from hypothesis import given
from hypothesis import strategies as st

from modemd.emulator.atparse import ParseError, parse

from .helpers import modem


@given(st.text(alphabet=string.printable + "\x00\x1a\x1bé", max_size=80))
def test_parser_only_raises_parse_error(text):
    try:
        cmds = parse(text)
    except ParseError:
        return
    assert cmds and all(c.kind in ("exec", "read", "test", "write") for c in cmds)


async def test_random_lines_never_kill_the_module():
    rng = random.Random(1234)
    alphabet = b'AT+QIOPENSDR=?,"0123456789\x00\x1a\x1b \xff\n'
    async with modem() as (emu, port):
        await port.ok("ATE0")
        for _ in range(200):
            line = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
            if b"QISEND" in line.upper() or b"QPOWD" in line.upper() or b"CFUN" in line.upper():
                continue  # a prompt would eat the next lines; power commands end the test
            await port.write(line + b"\r")
        await port.write(b"AT+QIACT=1\r")
        await port.drain(0.3)
        await port.write(b"ATI\r")
        got = await port.expect(b"Revision: BG96MAR02A07M1G\r\n\r\nOK\r\n")
        assert b"BG96" in got
        assert await port.cmd("AT", echo=False) == ["OK"]
        # an over-long line is refused, the next one works
        await port.write(b"AT" + b"X" * 3000 + b"\r")
        assert await port.line() == "ERROR"
        assert await port.cmd("AT", echo=False) == ["OK"]
