"""The channel's line discipline over a real pty: a final result is complete at its LF (the next command
is not written before it), a CR-only module is recognised by silence after its CR, and real modules'
unsolicited lines are counted per prefix and logged at DEBUG (INFO once per new prefix), never WARNING."""

from __future__ import annotations

import logging
import os
from types import SimpleNamespace

import pytest
import trio
import trio.testing

from modemd import metrics_provider
from modemd.at.channel import LINE_END_CEIL, AtChannel
from modemd.at.protocol import Command
from modemd.at.unsolicited import GARBLED, OTHER, UnsolicitedLines, prefix_of
from modemd.at.urc import OtherUrc, Recv, is_urc, parse_urc
from modemd.link import RadioStats
from modemd.metrics import Metrics
from modemd.serial import SerialPort

from .conftest import open_stack
from .real_lines import NOISE, USED
from .test_channel import activate, echo_server, next_urc

QIRD = Command("AT+QIRD=0,1500", prefix="+QIRD:", payload=True)
#: the module's chatter the daemon has no use for (RDY, POWERED DOWN, +QIURC make it act)
CHATTER = [line for _, line in NOISE if line not in USED]


@pytest.fixture
def frozen_clock():
    """Virtual time that only moves when the test jumps it: the reader's wait for an LF never
    runs out by itself, whatever the load of the machine."""
    return trio.testing.MockClock()


class Tap:
    """The real pty port, with what the channel read and wrote recorded (nothing else changes)."""

    def __init__(self, port: SerialPort) -> None:
        self.port = port
        self.read = bytearray()
        self.written = bytearray()
        self.changed = trio.Event()

    def _saw(self, data: bytes | None) -> bytes | None:
        if data:
            self.read += data
            self.changed.set()
            self.changed = trio.Event()
        return data

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        return self._saw(await self.port.receive_some(max_bytes))

    def read_nowait(self, max_bytes: int = 65536) -> bytes | None:
        return self._saw(self.port.read_nowait(max_bytes))

    def write_nowait(self, data: bytes) -> int:
        sent = self.port.write_nowait(data)
        self.written += data[:sent]
        return sent

    async def send_all(self, data: bytes) -> None:
        await self.port.send_all(data)
        self.written += data

    async def read_until(self, tail: bytes, start: int = 0) -> None:
        while not self.read[start:].endswith(tail):
            await self.changed.wait()


async def open_pty_channel():
    master, slave = os.openpty()
    port = SerialPort.open(os.ttyname(slave), 115200, lock_dir=None)
    os.close(slave)
    tap = Tap(port)
    return AtChannel(tap), tap, port, trio.lowlevel.FdStream(master)


async def read_command(module, buf: bytearray) -> bytes:
    while b"\r" not in buf:
        buf += await module.receive_some(4096)
    line, _, rest = bytes(buf).partition(b"\r")
    buf[:] = rest
    return line


async def test_next_command_is_not_written_before_the_lf_of_the_final_result(frozen_clock):
    channel, tap, port, module = await open_pty_channel()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            first = channel.submit(Command("AT"))
            second = channel.submit(Command("AT+CSQ", prefix="+CSQ:"))
            buf = bytearray()
            assert await read_command(module, buf) == b"AT"
            await module.send_all(b"\r\nOK\r")  # the module's output split between CR and LF
            await tap.read_until(b"OK\r")
            await trio.testing.wait_all_tasks_blocked()
            assert channel.protocol.awaiting_line_end
            assert not first.done.is_set() and bytes(tap.written) == b"AT\r"  # still printing
            await module.send_all(b"\n")
            assert await read_command(module, buf) == b"AT+CSQ"
            assert (await channel.wait(first)).final == "OK"
            # the same split inside an information line and before the payload of +QIRD
            await module.send_all(b"\r\n+CSQ: 20,99\r")
            await tap.read_until(b"99\r")
            await module.send_all(b"\n\r\nOK\r")
            await tap.read_until(b"\nOK\r")
            await trio.testing.wait_all_tasks_blocked()
            assert not second.done.is_set()
            third = channel.submit(QIRD)
            assert bytes(tap.written) == b"AT\rAT+CSQ\r"
            await module.send_all(b"\n")
            assert (await channel.wait(second)).lines == ["+CSQ: 20,99"]
            assert await read_command(module, buf) == b"AT+QIRD=0,1500"
            for piece in (b"\r\n+QIRD: 4\r", b"\n\r\n", b"ab", b"\r\n\r\nOK\r", b"\n"):
                await module.send_all(piece)
                await trio.testing.wait_all_tasks_blocked()
            response = await channel.wait(third)
            assert response.payload == b"\r\nab" and response.final == "OK"
            assert channel.line_end_silences == 0 and trio.current_time() == 0
            nursery.cancel_scope.cancel()
    finally:
        port.close()
        await module.aclose()


async def cr_only_module(module, answers: dict[bytes, bytes]) -> None:
    """Answers each command line with its CR-only output."""
    buf = bytearray()
    while True:
        line = await read_command(module, buf)
        await module.send_all(answers[line])


async def answered(channel, tap, clock, command, tail: bytes):
    """Run `command`; once its answer (ending in `tail`) is read, let the reader's wait for an
    LF run out if it is waiting for one (virtual time: a CR-only module says nothing more)."""
    start = len(tap.read)
    request = channel.submit(command)
    await tap.read_until(tail, start)
    await trio.testing.wait_all_tasks_blocked()
    if not request.done.is_set():
        assert channel.protocol.awaiting_line_end
        clock.jump(LINE_END_CEIL)
    return await channel.wait(request)


async def test_a_cr_only_module_still_gets_answers(frozen_clock):
    """Its CR is followed by silence: after a few character times the reader takes the CR as the
    line's end; after two such lines the module is known and no line waits any more."""
    channel, tap, port, module = await open_pty_channel()
    answers = {
        b"AT": b"OK\r",
        b"AT+CSQ": b"+CSQ: 20,99\rOK\r",
        b"ATE0": b"\r\rOK\r\r",
        QIRD.text.encode(): b"+QIRD: 5\rhe\r\nl\rOK\r",
    }
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cr_only_module, module, answers)
            await nursery.start(channel.run)
            clock = frozen_clock
            assert (await answered(channel, tap, clock, Command("AT"), b"OK\r")).final == "OK"
            assert channel.line_end_silences == 1 and not channel.protocol.framer.cr_only
            csq = await answered(channel, tap, clock, Command("AT+CSQ", prefix="+CSQ:"), b"OK\r")
            assert csq.lines == ["+CSQ: 20,99"] and csq.final == "OK"
            # its CR was followed by "OK": the second CR-only line end, so the module is known
            # and its OK needs no wait
            assert channel.protocol.framer.cr_only and channel.line_end_silences == 1
            ate0 = await answered(channel, tap, clock, Command("ATE0"), b"OK\r\r")
            assert ate0.final == "OK"
            response = await answered(channel, tap, clock, QIRD, b"OK\r")
            assert response.payload == b"he\r\nl" and response.final == "OK"
            assert channel.line_end_silences == 1  # known: no more waits for an LF
            nursery.cancel_scope.cancel()
    finally:
        port.close()
        await module.aclose()


def frame(line: str) -> bytes:
    return b"\r\n" + line.encode("latin-1") + b"\r\n"


async def test_real_modules_chatter_is_counted_and_never_warned_about(caplog):
    """Every line shape real modules print that the daemon has no use for, unsolicited and in the
    middle of answers: the answers stay exact, nothing is logged above DEBUG except one INFO per
    new prefix (rate-limited), and the counts reach the metric."""
    caplog.set_level(logging.DEBUG)
    channel, tap, port, module = await open_pty_channel()
    chatter = [line for line in CHATTER if not line.startswith(("+QIRD:", "+CSQ:"))]
    payload = b"OK\r\n+CSQ: 1,2\r\n> \x00\xff"
    answers = {
        b"AT+CSQ": b"".join(frame(line) for line in chatter[::2]) + b"\r\n+CSQ: 20,99\r"
        + b"".join(b"\n" + frame(line)[2:-1] for line in chatter[1::2]) + b"\n\r\nOK\r\n",
        QIRD.text.encode(): frame(chatter[0]) + b"\r\n+QIRD: %d\r\n" % len(payload) + payload
        + b"\r\n" + b"".join(frame(line) for line in chatter) + b"\r\nOK\r\n",
    }

    async def module_side():
        await module.send_all(b"".join(frame(line) for line in chatter))  # nothing in flight
        buf = bytearray()
        while True:
            line = await read_command(module, buf)
            answer = answers[line]
            for i in range(0, len(answer), 7):  # fragmented like a busy UART
                await module.send_all(answer[i : i + 7])

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(channel.run)
            nursery.start_soon(module_side)
            for _ in range(3):
                csq = await channel.command(Command("AT+CSQ", prefix="+CSQ:"))
                assert csq.lines == ["+CSQ: 20,99"] and csq.final == "OK"
                response = await channel.command(QIRD)
                assert response.payload == payload and response.lines == [f"+QIRD: {len(payload)}"]
            nursery.cancel_scope.cancel()
    finally:
        port.close()
        await module.aclose()

    loud = [r for r in caplog.records if r.levelno > logging.DEBUG]
    assert all(r.levelno == logging.INFO and "no use for" in r.getMessage() for r in loud), loud
    unused = [line for line in chatter if not is_urc(line) or isinstance(parse_urc(line), OtherUrc)]
    prefixes = {prefix_of(line) for line in unused}
    assert len(loud) <= len(prefixes)
    counts = channel.unsolicited.counts
    assert set(counts) == prefixes
    assert chatter[0] in unused  # it is also in every +QIRD answer
    assert sum(counts.values()) == channel.unsolicited.total == len(unused) * (1 + 3 * 2) + 3
    assert counts["+QIND"] == 4 * 7  # SMS DONE, PB DONE, "csq", "FOTA": 7 times each

    m = Metrics()
    daemon = SimpleNamespace(
        link=SimpleNamespace(state="serving", identity={}, context=lambda cid: SimpleNamespace(
            up=True, addresses=()), radio=RadioStats()),
        supervisor=SimpleNamespace(channel_stats=channel.stats(),
                                   contexts=(SimpleNamespace(context_id=1),)),
    )
    metrics_provider._module(daemon, m)
    for prefix, n in counts.items():
        assert m.value("modemd_unsolicited_lines_total", {"prefix": prefix}) == n


def test_unsolicited_prefixes_are_bounded_and_announced_rate_limited():
    stats = UnsolicitedLines()
    assert prefix_of('+QIND: "csq",27,99') == "+QIND"
    assert prefix_of('+QGPSURC: "xtradataexpire",0,"2024/04/17,13:00:00"') == "+QGPSURC"
    assert prefix_of("Call Ready") == "Call Ready"
    assert prefix_of("MQTT<zephyr_publisherAT+QICLOSE=0") == GARBLED
    assert prefix_of("\xff\x00") == GARBLED and prefix_of('"') == GARBLED
    assert len(prefix_of("+" + "X" * 100 + ": 1")) == 16
    announced = [stats.note(f"+X{i}: 1", now=0.0)[1] for i in range(100)]
    assert len(stats.counts) == 64 and stats.counts[OTHER] == 100 - 63
    assert sum(announced) == 8  # a burst, then one per minute
    assert stats.note("+NEW: 1", now=30.0) == (OTHER, False)
    assert not stats.note("+X1: 1", now=61.0)[1]  # not new
    stats2 = UnsolicitedLines()
    for i in range(8):
        stats2.note(f"+A{i}: 1", now=0.0)
    assert stats2.note("+B: 1", now=1.0) == ("+B", False)
    assert stats2.note("+C: 1", now=120.0) == ("+C", True)


async def test_emulator_noise_costs_no_warning_and_changes_no_answer(caplog):
    """The emulator's real-module noise (an unsolicited real line at every line boundary, output in
    1-16 byte pieces, so also split between CR and LF) through the whole AT stack: every answer
    exact, a TCP echo byte-exact, nothing logged at WARNING."""
    caplog.set_level(logging.DEBUG)
    async with open_stack("bg96") as s:
        emu = s.emulator
        emu.noise_seed(13)
        emu.noise_urcs(1)
        emu.noise_fragment(1, 16)
        for _ in range(3):
            await s.at.at()
            ident = await s.at.identify()
            assert ident["model"] == "BG96" and ident["imei"].isdigit()
            assert (await s.at.ati()).splitlines()[:2] == ["Quectel", "BG96"]
            assert await s.at.sim_state() == "READY"
            rssi, _ = await s.at.csq()
            assert 0 <= rssi <= 99
        await activate(s.at)
        async with trio.open_nursery() as nursery:
            port = await echo_server(nursery)
            urcs = s.channel.subscribe()
            await s.at.qiopen_and_wait(1, 0, "TCP", "127.0.0.1", port)
            payload = b"\r\nOK\r\n> " + os.urandom(1200)
            assert await s.at.qisend(0, payload)
            got = b""
            while len(got) < len(payload):
                chunk = (await s.at.qird(0, 1500)).data
                if not chunk:
                    await next_urc(urcs, Recv)
                    continue
                got += chunk
            assert got == payload
            await s.at.qiclose(0)
            nursery.cancel_scope.cancel()
        assert emu.noise.inserted > 20
        assert s.channel.unsolicited.total > 0
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not loud, [r.getMessage() for r in loud]
