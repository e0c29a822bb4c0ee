"""A late answer never shifts answers onto the next command: the lost-command probe's answer is
attributed (its `+CMEE:` line), not timed, also across the module's RDY. The sans-IO rules
(protocol.py 6-9) as unit tests, then
the two races over a real pty against an emulator that is busy before answering (MockClock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from modemd.at.channel import (
    PROBE_PREFIX,
    PROBE_TEXT,
    PROBE_TIMEOUT,
    AtChannel,
    AtModuleReset,
    CommandLost,
)
from modemd.at.protocol import AtProtocol, Command, Done, Unknown
from modemd.profiles.base import FAST

from .conftest import open_stack

PROBE = Command(PROBE_TEXT, prefix=PROBE_PREFIX, probe=True)
ATI = Command("ATI", bare_lines=True)


def _events(proto: AtProtocol, data: bytes) -> list[object]:
    proto.receive(data)
    out = []
    while (ev := proto.next_event()) is not None:
        out.append(ev)
    return out


def _done(events: list[object]) -> list[Done]:
    return [e for e in events if isinstance(e, Done)]


def test_a_final_before_the_probe_line_is_the_abandoned_commands_and_dropped():
    proto = AtProtocol()
    proto.send(Command("AT+CGSN", bare_lines=True))
    proto.abort()  # given up: its answer is late
    proto.send(PROBE)
    assert _done(_events(proto, b"\r\n866425030123456\r\n\r\nOK\r\n")) == []
    assert proto.in_flight is PROBE and proto.counters["stale_finals"] == 1
    [done] = _done(_events(proto, b"\r\n+CMEE: 1\r\n\r\nOK\r\n"))
    assert done.response.lines == ["+CMEE: 1"] and done.response.final == "OK"
    proto.send(ATI)  # in sync again: ATI gets its own lines only
    [done] = _done(_events(proto, b"\r\nQuectel\r\nBG96\r\n\r\nOK\r\n"))
    assert done.response.lines == ["Quectel", "BG96"]


def test_an_abandoned_probes_answer_is_dropped_even_with_another_command_in_flight():
    proto = AtProtocol()
    proto.send(PROBE)
    proto.abort()  # unanswered within its time: a debt
    assert proto.probe_debt == 1
    proto.send(ATI)
    events = _events(proto, b"\r\n+CMEE: 1\r\n\r\nOK\r\n")
    assert _done(events) == [] and proto.in_flight is ATI
    assert proto.counters["late_probe_answers"] == 1 and proto.probe_debt == 0
    [done] = _done(_events(proto, b"\r\nQuectel\r\nBG96\r\nRevision: X\r\n\r\nOK\r\n"))
    assert done.response.lines == ["Quectel", "BG96", "Revision: X"]


def test_a_probe_abandoned_after_its_line_still_owes_its_final():
    proto = AtProtocol()
    proto.send(PROBE)
    assert _done(_events(proto, b"\r\n+CMEE: 1\r\n")) == []
    proto.abort()
    proto.send(ATI)
    assert _done(_events(proto, b"\r\nOK\r\n")) == []  # the probe's final, not ATI's
    [done] = _done(_events(proto, b"\r\nQuectel\r\n\r\nOK\r\n"))
    assert done.response.lines == ["Quectel"]


def test_the_debt_of_probes_during_probe_two_is_paid_in_order():
    proto = AtProtocol()
    proto.send(Command("AT+CSQ", prefix="+CSQ:"))
    proto.abort()
    proto.send(PROBE)
    proto.abort()  # probe 1 unanswered
    proto.send(PROBE)  # probe 2
    wire = b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n" + b"\r\n+CMEE: 1\r\n\r\nOK\r\n" * 2
    events = _events(proto, wire)
    [done] = _done(events)
    assert done.response.command is PROBE and done.response.lines == ["+CMEE: 1"]
    assert proto.counters["late_probe_answers"] == 1 and proto.counters["stale_finals"] == 1
    assert any(isinstance(e, Unknown) and e.text.startswith("+CSQ") for e in events)


def test_the_debt_expires_at_an_attributed_final_and_at_reset():
    proto = AtProtocol()
    proto.send(PROBE)
    proto.abort()  # a probe that never reached a hung module
    proto.send(Command("AT+CSQ", prefix="+CSQ:"))
    [done] = _done(_events(proto, b"\r\n+CSQ: 20,99\r\n\r\nOK\r\n"))
    assert done.response.final == "OK" and proto.probe_debt == 0  # in order: nothing still due
    user = Command("AT+CMEE?", prefix="+CMEE:")  # `modemctl at 'AT+CMEE?'` gets its answer
    proto.send(user)
    [done] = _done(_events(proto, b"\r\n+CMEE: 1\r\n\r\nOK\r\n"))
    assert done.response.lines == ["+CMEE: 1"]
    proto.send(PROBE)
    proto.abort()
    proto.reset()  # the module reset, or a new channel: its old answers will never come
    assert proto.probe_debt == 0 and not proto.stale_possible
    proto.send(user)
    assert _done(_events(proto, b"\r\n+CMEE: 1\r\n\r\nOK\r\n"))[0].response.lines == ["+CMEE: 1"]


def test_with_nothing_abandoned_a_probe_takes_an_error_as_its_answer():
    proto = AtProtocol()  # wait_ready: a booting module's ERROR is an answer too
    proto.send(PROBE)
    [done] = _done(_events(proto, b"\r\nERROR\r\n"))
    assert done.response.final == "ERROR"


async def _identity(channel: AtChannel, at) -> list[list[str]]:
    requests = [channel.submit(at.cmd(text, bare_lines=True)) for text in
                ("AT+CGMR", "AT+CGSN", "ATI")]
    return [(await channel.wait(r)).lines for r in requests]


def test_a_probe_that_crossed_the_restart_is_dropped_when_a_plain_command_waits():
    """Rule 9: RDY with a probe in flight; the module answers that probe after its RDY."""
    proto = AtProtocol()
    proto.send(PROBE)
    proto.restarted()
    ate0 = Command("ATE0")
    proto.send(ate0)
    assert _done(_events(proto, b"\r\n+CMEE: 0\r\n\r\nOK\r\n")) == []  # the crossing probe's
    [done] = _done(_events(proto, b"\r\nOK\r\n"))
    assert done.response.command is ate0 and proto.counters["late_probe_answers"] == 1


def test_a_probe_after_the_restart_takes_the_first_answer_and_the_leftover_is_dropped():
    """Both probes answered: the second takes the first answer at once (no timeout), and the
    answer left over never ends the plain command after it."""
    proto = AtProtocol()
    proto.send(PROBE)
    proto.restarted()
    proto.send(PROBE)
    [done] = _done(_events(proto, b"\r\n+CMEE: 0\r\n\r\nOK\r\n"))
    assert done.response.lines == ["+CMEE: 0"]
    proto.send(ATI)
    assert _done(_events(proto, b"\r\n+CMEE: 0\r\n\r\nOK\r\n")) == []  # left over: dropped
    [done] = _done(_events(proto, b"\r\nQuectel\r\nBG96\r\n\r\nOK\r\n"))
    assert done.response.lines == ["Quectel", "BG96"]


def test_a_probe_the_booting_module_never_read_costs_nothing():
    """The crossing probe was dropped by the booting module: the next probe gets its own answer,
    and the debt ends at the next final of a plain command (a later probe is not touched)."""
    proto = AtProtocol()
    proto.send(PROBE)
    proto.restarted()
    proto.send(PROBE)
    assert len(_done(_events(proto, b"\r\n+CMEE: 1\r\n\r\nOK\r\n"))) == 1
    proto.send(Command("ATE0"))
    assert len(_done(_events(proto, b"\r\nOK\r\n"))) == 1
    proto.send(PROBE)
    [done] = _done(_events(proto, b"\r\n+CMEE: 1\r\n\r\nOK\r\n"))
    assert done.response.lines == ["+CMEE: 1"] and proto.counters["late_probe_answers"] == 0


@pytest.mark.parametrize("probe_busy", [
    0.6,                     # the probe's answer comes later than the old 0.4 s drain
    PROBE_TIMEOUT + 0.2,     # probe 1 goes unanswered within its time and answers during probe 2
])
async def test_a_late_answer_after_the_probe_never_shifts_the_next_answers(mock_clock, probe_busy):
    async with open_stack("bg96") as s:
        own = await _identity(s.channel, s.at)
        assert all(own)
        counters = s.channel.protocol.counters
        late0 = counters["late_probe_answers"]  # the boot: a probe answered after RDY, dropped
        # AT+CSQ answered after the probe was written (expected time FAST, then the quiet line)
        s.emulator.stall(r"AT\+CSQ", FAST + 0.2)
        s.emulator.stall(r"AT\+CMEE\?", probe_busy)  # the module is slow with the probe too
        lost = s.channel.submit(s.at.cmd("AT+CSQ", prefix="+CSQ:"))
        after = [s.channel.submit(s.at.cmd(text, bare_lines=True)) for text in
                 ("AT+CGMR", "AT+CGSN", "ATI")]
        with pytest.raises(CommandLost):
            await s.channel.wait(lost)
        assert [(await s.channel.wait(r)).lines for r in after] == own
        assert await _identity(s.channel, s.at) == own
        assert (await s.at.run("AT+CSQ", prefix="+CSQ:")).lines[0].startswith("+CSQ:")
        assert counters["stale_finals"] == 1
        assert counters["late_probe_answers"] - late0 == (1 if probe_busy > PROBE_TIMEOUT else 0)


async def test_the_supervisors_probe_is_attributed_too(mock_clock):
    async with open_stack("bg96") as s:
        own = await _identity(s.channel, s.at)
        late0 = s.channel.protocol.counters["late_probe_answers"]  # the boot's, if any
        s.emulator.stall(r"AT\+CMEE\?", PROBE_TIMEOUT + 0.3)
        assert not await s.channel.probe(PROBE_TIMEOUT)  # its answer comes later: a debt
        assert s.channel.protocol.probe_debt == 1
        assert await _identity(s.channel, s.at) == own  # the late +CMEE/OK never ends CGMR
        assert s.channel.protocol.counters["late_probe_answers"] - late0 == 1


async def test_a_probe_answered_after_the_modules_rdy_never_lends_its_ok_to_the_next_command():
    """The module read the probe just as it came up: it prints RDY, then answers the probe. RDY
    ends the probe at once (AtModuleReset), and its late `+CMEE:` line and OK are that probe's,
    dropped: ATE0, written next, gets its own answer (ERROR here, to tell them apart). Scripted
    over an in-memory stream: the byte order is the point, and the emulator's boot produces it
    only by chance (it did in tests/conftest.py's wait_answering, once every few runs)."""
    channel, module, read_line = await _scripted_module()
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run)
        with trio.fail_after(10):
            async with trio.open_nursery() as probing:
                probing.start_soon(_expect_reset, channel)
                assert await read_line() == PROBE_TEXT.encode() + b"\r"
                await module.send_all(b"\r\nRDY\r\n")
            ate0 = channel.submit(Command("ATE0"))
            assert await read_line() == b"ATE0\r"
            await module.send_all(b"\r\n+CMEE: 0\r\n\r\nOK\r\n")  # the probe's late answer
            await module.send_all(b"\r\nERROR\r\n")               # ATE0's own
            response = await channel.wait(ate0, check=False)
        assert response.final == "ERROR"
        assert channel.protocol.counters["late_probe_answers"] == 1
        nursery.cancel_scope.cancel()


async def _expect_reset(channel: AtChannel) -> None:
    with pytest.raises(AtModuleReset):
        await channel.probe(PROBE_TIMEOUT)


async def _scripted_module():
    """A channel over an in-memory stream, and the test's hand on the module's end of it."""
    host, module = trio.testing.memory_stream_pair()

    async def read_line() -> bytes:
        line = b""
        while not line.endswith(b"\r"):
            line += await module.receive_some(1)
        return line

    return AtChannel(host), module, read_line


async def _cross_the_rdy(channel, module, read_line):
    """AT+CSQ written, then the module's RDY: AT+CSQ fails, and the channel writes the probe
    before ATE0, queued meanwhile (returned)."""
    csq = channel.submit(Command("AT+CSQ", prefix="+CSQ:"))
    assert await read_line() == b"AT+CSQ\r"
    ate0 = channel.submit(Command("ATE0"))
    await module.send_all(b"\r\nRDY\r\n")
    with pytest.raises(AtModuleReset):
        await channel.wait(csq)
    assert await read_line() == PROBE_TEXT.encode() + b"\r"  # not ATE0
    return ate0


@pytest.mark.parametrize("late", [
    b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n",  # the booting module read AT+CSQ and answers it now
    b"\r\nERROR\r\n",                  # ... or read half of it
    b"",                               # ... or never read it: the probe costs one exchange
])
async def test_a_plain_command_answered_after_the_modules_rdy_never_lends_its_final_to_the_next(
        late):
    """A plain command crosses the module's RDY: it ends with AtModuleReset at RDY, and the
    channel writes one attributed probe before the next queued command, so the command's late
    final (which looks like any other) is dropped before the probe's `+CMEE:` line instead of
    ending ATE0 (whose own answer is ERROR here, to tell them apart)."""
    channel, module, read_line = await _scripted_module()
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run)
        with trio.fail_after(10):
            ate0 = await _cross_the_rdy(channel, module, read_line)
            await module.send_all(late + b"\r\n+CMEE: 1\r\n\r\nOK\r\n")
            assert await read_line() == b"ATE0\r"
            await module.send_all(b"\r\nERROR\r\n")
            response = await channel.wait(ate0, check=False)
        assert response.final == "ERROR"
        assert channel.protocol.counters["stale_finals"] == (1 if late else 0)
        nursery.cancel_scope.cancel()


async def test_a_module_silent_after_its_rdy_holds_the_next_command_one_probe_time_only(
        mock_clock):
    """The probe after the crossing goes unanswered (a module still busy booting): the queue
    goes on after PROBE_TIMEOUT, and the probe's late answer is a debt, dropped (rule 7)."""
    channel, module, read_line = await _scripted_module()
    async with trio.open_nursery() as nursery:
        await nursery.start(channel.run)
        ate0 = await _cross_the_rdy(channel, module, read_line)
        started = trio.current_time()
        assert await read_line() == b"ATE0\r"
        assert trio.current_time() - started == pytest.approx(PROBE_TIMEOUT)
        await module.send_all(b"\r\n+CMEE: 1\r\n\r\nOK\r\n\r\nERROR\r\n")
        assert (await channel.wait(ate0, check=False)).final == "ERROR"
        assert channel.protocol.counters["late_probe_answers"] == 1
        nursery.cancel_scope.cancel()
