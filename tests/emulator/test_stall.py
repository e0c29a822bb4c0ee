"""A busy module: Emulator.stall (control `stall`) delays the answer of a matching command line;
later lines are buffered and answered after it, in order (MockClock)."""

import pytest
import trio

from modemd.emulator.control import run_command

from .helpers import modem


async def test_stall_delays_the_answer_and_later_lines_wait_their_turn(mock_clock):
    async with modem() as (emu, port):
        await port.ok("ATE0")
        emu.stall(r"AT\+CSQ", 5.0)
        t0 = trio.current_time()
        await port.write(b"AT+CSQ\r")
        await port.write(b"AT+CGMM\r")  # buffered while the module is busy
        out = await port.expect(b"BG96\r\n\r\nOK\r\n", timeout=30)
        assert trio.current_time() - t0 >= 5.0
        assert out.index(b"+CSQ: ") < out.index(b"BG96")  # answered in order
        assert out.count(b"OK\r\n") == 2
        t1 = trio.current_time()
        assert (await port.ok("AT+CSQ"))[0].startswith("+CSQ: ")  # count=1: used up
        assert trio.current_time() - t1 < 5.0


async def test_stall_over_the_control_socket(mock_clock):
    async with modem() as (emu, _port):
        assert await run_command(emu, r"stall AT\+CMEE\? 1.5 2") == "ok"
        assert [(r[0].pattern, r[1], r[2]) for r in emu._stall] == [(r"AT\+CMEE\?", 2, 1.5)]
        assert await run_command(emu, r"stall AT\+CMEE\? 1 0") == "ok"  # 0 cancels
        assert emu._stall == []
        assert (await run_command(emu, "stall AT")).startswith("error expected stall")
        assert (await run_command(emu, "stall AT -1")).startswith("error")
        assert "stall <regex> <sec>" in await run_command(emu, "help")
        with pytest.raises(ValueError, match="bad regular expression"):
            emu.stall("AT(", 1.0)
