"""Lost on the line, at the AT channel: a command or its answer lost costs seconds (CommandLost after
one probe), never a reboot; only a module that stays silent through the probe series is reported
silent (emulator lose faults over a real pty, MockClock)."""

from __future__ import annotations

import pytest
import trio

from modemd.at.channel import (
    FILLER,
    PROBE_TIMEOUT,
    PROBES,
    QUIET_MAX,
    AtTimeout,
    CommandLost,
    Observer,
)
from modemd.profiles import BG96
from modemd.profiles.base import DATA, FAST

from .conftest import open_stack
from .test_channel import activate


class Recorder(Observer):
    def __init__(self) -> None:
        self.silent: list[tuple[str, float]] = []
        self.lost: list[str] = []
        self.echo: list[str] = []

    def module_silent(self, name: str, seconds: float) -> None:
        self.silent.append((name, seconds))

    def command_lost(self, name: str) -> None:
        self.lost.append(name)

    def echo_back(self, name: str) -> None:
        self.echo.append(name)


def test_expected_times_are_profile_data():
    assert BG96.expect("AT+CSQ", 5.0) == FAST            # "300 ms" class
    assert BG96.expect("AT+QISEND", 120.0) == DATA       # answered from the module's buffers
    assert BG96.expect("AT+QICLOSE", 10.0) == 10.0       # network-bound: the manual's time
    assert BG96.expect("AT+QIACT", 150.0) is None        # flowchart rule: no probe
    assert BG96.expect("AT+QIOPEN", 150.0) is None


async def sink_server(nursery, received: bytearray) -> int:
    async def handle(stream):
        async with stream:
            async for data in stream:
                received.extend(data)

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    return listeners[0].socket.getsockname()[1]


async def test_lost_command_is_command_lost_and_the_channel_goes_on(mock_clock):
    async with open_stack("bg96") as s:
        rec = s.channel.observer = Recorder()
        s.emulator.lose_command(r"AT\+CSQ")
        t0 = trio.current_time()
        first = s.channel.submit(s.at.cmd("AT+CSQ", prefix="+CSQ:"))
        queued = s.channel.submit(s.at.cmd("AT+CGMM", bare_lines=True))  # waits behind it
        with pytest.raises(CommandLost) as info:
            await s.channel.wait(first)
        took = trio.current_time() - t0
        assert info.value.command.name == "AT+CSQ"
        assert not info.value.data_written and not info.value.junk
        assert FAST <= took <= FAST + QUIET_MAX + PROBE_TIMEOUT
        assert rec.lost == ["AT+CSQ"] and rec.silent == []
        assert "BG96" in " ".join((await s.channel.wait(queued)).lines)
        assert await s.at.csq()


async def test_lost_final_is_command_lost_and_its_late_lines_do_not_end_the_next(mock_clock):
    async with open_stack("bg96") as s:
        s.emulator.lose_answer(r"AT\+QISTATE\?", part="final")
        with pytest.raises(CommandLost):
            await s.at.qistate()
        assert await s.at.sim_state() == "READY"
        assert s.channel.commands_lost == 1


async def test_lost_qisend_line_writes_no_payload(mock_clock):
    async with open_stack("bg96") as s, trio.open_nursery() as nursery:
        received = bytearray()
        port = await sink_server(nursery, received)
        await activate(s.at)
        await s.at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", port)
        s.emulator.lose_command(r"AT\+QISEND=0,\d+")
        with pytest.raises(CommandLost) as info:
            await s.at.qisend(0, b"y" * 100)
        assert not info.value.data_written and not info.value.junk
        assert await s.at.qisend(0, b"z" * 10)
        await trio.sleep(1)
        assert bytes(received) == b"z" * 10  # the probe never became data
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("size", [100, 3, 2])
async def test_lost_prompt_is_completed_with_filler_and_reported_as_junk(mock_clock, size):
    async with open_stack("bg96") as s, trio.open_nursery() as nursery:
        received = bytearray()
        port = await sink_server(nursery, received)
        await activate(s.at)
        await s.at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", port)
        s.emulator.lose_answer(r"AT\+QISEND=0,\d+", part="prompt")
        with pytest.raises(CommandLost) as info:
            await s.at.qisend(0, b"c" * size)  # the client's bytes
        assert info.value.data_written and info.value.junk
        await trio.sleep(1)
        assert b"c" not in received           # never the client's bytes without a `>`
        assert bytes(received) == (b"AT\r" + FILLER * (size - 3))[:size]
        await s.at.at()                        # back in command mode, nothing glued
        assert await s.at.qisend(0, b"ok")
        nursery.cancel_scope.cancel()


async def test_silence_after_the_probe_series_is_reported_once_and_holds_the_queue(mock_clock):
    async with open_stack("bg96") as s:
        rec = s.channel.observer = Recorder()
        s.emulator.hang(True)
        t0 = trio.current_time()
        first = s.channel.submit(s.at.cmd("AT+CSQ", prefix="+CSQ:"))
        queued = s.channel.submit(s.at.cmd("AT+CGMM", bare_lines=True))
        with pytest.raises(AtTimeout):
            await s.channel.wait(first)
        took = trio.current_time() - t0
        assert FAST + PROBES * PROBE_TIMEOUT <= took <= FAST + QUIET_MAX + PROBES * PROBE_TIMEOUT + 1
        assert [name for name, _ in rec.silent] == ["AT+CSQ"]
        assert s.channel.silent
        await trio.sleep(30)
        assert not queued.done.is_set()        # held: nothing is written to a silent module
        assert len(rec.silent) == 1
        assert not await s.channel.probe()     # the supervisor's resync: still silent
        s.emulator.hang(False)
        assert await s.channel.probe()         # answered: the queue goes on
        assert "BG96" in " ".join((await s.channel.wait(queued)).lines)
        assert not s.channel.silent and len(rec.silent) == 1


async def test_flowchart_command_times_out_without_a_probe(mock_clock):
    async with open_stack("bg96", qiact_delay=400.0) as s:
        rec = s.channel.observer = Recorder()
        await s.at.qicsgp(1, "internet")
        with pytest.raises(AtTimeout):
            await s.at.qiact(1)
        assert rec.silent == [] and rec.lost == []  # the flowchart decides (PDP keeper: reboot)


async def test_echo_while_ate0_is_in_effect_is_reported(mock_clock):
    async with open_stack("bg96") as s:
        rec = s.channel.observer = Recorder()
        s.channel.echo_disabled()
        await s.at.csq()
        assert rec.echo == []
        await s.channel.command(s.at.cmd("ATE1"))  # as a module that restarted unseen would be
        await s.at.csq()
        assert rec.echo == ["AT+CSQ"] and s.channel.echo_lines >= 1


async def test_a_command_lost_behind_a_flowchart_command_is_found_at_its_own_expected_time(
    mock_clock,
):
    """The writer sleeps on one alarm that the channel only moves earlier: while AT+QIACT (no
    expected time, a 150 s deadline) runs, the alarm is far away; the AT+CSQ written the moment
    QIACT answers must pull it in, or its loss would be found only at QIACT's deadline."""
    async with open_stack("bg96", qiact_delay=5.0) as s:
        await s.at.qicsgp(1, "internet")
        s.emulator.lose_command(r"AT\+CSQ")
        qiact = s.channel.submit(s.at.cmd("AT+QIACT=1", timeout=150.0))
        csq = s.channel.submit(s.at.cmd("AT+CSQ", prefix="+CSQ:"))  # written at QIACT's OK
        await s.channel.wait(qiact)
        t0 = trio.current_time()
        with pytest.raises(CommandLost), trio.fail_after(60):  # (QIACT's deadline: 150 s)
            await s.channel.wait(csq)
        assert trio.current_time() - t0 <= FAST + QUIET_MAX + PROBE_TIMEOUT
        assert await s.at.csq()
