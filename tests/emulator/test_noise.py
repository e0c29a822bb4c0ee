"""Real-module noise: unsolicited lines at line boundaries, fragmented output, junk bytes,
garbled lines, a silent reboot in the middle of a command."""

import os

import pytest
import trio

from modemd.emulator.control import run_command
from modemd.emulator.noise import REAL_URCS

from .helpers import activate, modem, open_client, tcp_server

URC_BYTES = {u.encode() for u in REAL_URCS}


async def _commands(port, n: int, command: str = "AT") -> list[str]:
    """Send `command` n times; every line seen that is not its OK."""
    other: list[str] = []
    for _ in range(n):
        lines = await port.cmd(command, echo=False)
        assert lines[-1] == "OK", lines
        other += lines[:-1]
    return other


def test_real_urcs_are_unsolicited_shapes_that_change_nothing():
    assert len(set(REAL_URCS)) == len(REAL_URCS) >= 15
    for line in REAL_URCS:
        assert "pdpdeact" not in line and '"closed"' not in line and "RDY" not in line
        assert "\r" not in line and "\n" not in line and ">" not in line
    assert '+QIND: "FOTA","DOWNLOADING", 37%' in REAL_URCS
    assert any(x.startswith("+CTZE: ") for x in REAL_URCS)
    assert any(x.startswith("+QNITZ: ") for x in REAL_URCS)
    assert any(x.startswith("+QGPSURC: ") for x in REAL_URCS)


async def test_unsolicited_lines_at_every_boundary():
    async with modem() as (emu, port):
        await port.ok("ATE0")
        emu.noise_urcs(1)
        await port.write(b"AT\r")
        raw = await port.expect(b"OK\r\n")
        assert raw == b"\r\nOK\r\n"  # the answer itself is whole
        line = await port.line()
        assert line.encode() in URC_BYTES
        emu.noise_urcs(0)
        assert await port.drain(0.1) == b""
        assert await _commands(port, 5) == []


async def test_unsolicited_lines_at_one_boundary_in_five_are_seeded():
    async def run(seed: int) -> list[str]:
        async with modem() as (emu, port):
            await port.ok("ATE0")
            emu.noise_seed(seed)
            emu.noise_urcs(5)
            extra = await _commands(port, 200)
            extra += (await port.drain(0.1)).decode("latin-1").split()  # after the last OK
            assert emu.noise.inserted == len(extra)
            return extra

    first = await run(7)
    assert 20 <= len(first) <= 80  # about one in five of 200 boundaries
    assert {x.encode() for x in first} <= URC_BYTES
    assert len(set(first)) > 5
    assert await run(7) == first  # same seed, same output
    assert await run(8) != first


@pytest.mark.parametrize("baud", [115200, 0])
async def test_fragmented_output_pieces_and_reads(monkeypatch, baud):
    async with modem(baud=baud) as (emu, port):
        await port.ok("ATE0")
        assert emu._pty is not None
        pieces: list[bytes] = []
        write_all = emu._pty.write_all

        async def spy(data):
            pieces.append(bytes(data))
            await write_all(data)

        monkeypatch.setattr(emu._pty, "write_all", spy)
        emu.noise_fragment(1, 16)
        reads: list[bytes] = []
        got = bytearray()
        await port.write(b"ATI\r" * 30)
        with trio.fail_after(10):
            while got.count(b"OK\r\n") < 30:
                await trio.lowlevel.wait_readable(port.fd)
                try:
                    chunk = os.read(port.fd, 65536)
                except BlockingIOError:
                    continue
                reads.append(chunk)
                got += chunk
        answer = b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"
        assert bytes(got) == answer * 30  # nothing lost, nothing added
        assert b"".join(pieces) == bytes(got)
        assert max(map(len, pieces)) <= 16 and min(map(len, pieces)) >= 1
        assert len({len(p) for p in pieces}) > 8  # sizes drawn over the range
        assert any(
            a.endswith(b"\r") and b.startswith(b"\n")
            for a, b in zip(pieces, pieces[1:], strict=False)
        )
        if baud:  # the pieces cross the line over time: the host's reads really see the splits
            assert len(reads) > len(answer) * 30 // 32
            assert any(r.endswith(b"\r") for r in reads)
        # (unlimited: pieces written back to back may reach a reader together, as the kernel
        # hands them over; the splits are still there, in the writes)
        emu.noise_fragment(None)
        pieces.clear()
        assert await port.ok("ATI")
        assert len(pieces) <= 5  # whole frames again


async def test_garbage_bytes_at_a_line_boundary():
    async with modem() as (emu, port):
        await port.ok("ATE0")
        emu.noise_garbage(48)
        await port.write(b"AT\r")
        assert await port.read_exact(6) == b"\r\nOK\r\n"
        junk = await port.read_exact(48)
        assert not set(junk) & set(b"\r\n>")
        assert await port.drain(0.1) == b""
        assert emu.noise.junk_written == 48
        lines = await port.cmd("AT", echo=False)  # the junk is a line of its own before it
        assert lines[-1] == "OK"


async def test_flipped_and_glued_unsolicited_lines():
    async with modem() as (emu, port):
        await port.ok("ATE0")
        emu.noise_garble(flip=1)
        await port.write(b"AT\r")
        assert await port.read_exact(6) == b"\r\nOK\r\n"
        flipped = (await port.line()).encode("latin-1")
        assert flipped not in URC_BYTES
        assert any(
            len(u) == len(flipped) and sum(a != b for a, b in zip(u, flipped, strict=True)) == 1
            for u in URC_BYTES
        )
        emu.noise_garble(glue=1)
        await port.write(b"AT\r")
        assert await port.read_exact(6) == b"\r\nOK\r\n"
        glued = (await port.line()).encode("latin-1")
        assert any(glued.startswith(u) and glued[len(u) :] in URC_BYTES for u in URC_BYTES)
        assert await port.drain(0.1) == b""


async def _probe_until_booted(port) -> bytes:
    """AT until the module answers again (a host's probe after a silent reboot)."""
    with trio.fail_after(10):
        while True:
            await port.write(b"AT\r")
            with trio.move_on_after(0.2):
                return await port.expect(b"OK\r\n")


async def test_silent_reboot_in_the_middle_of_a_command():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("ATE0")
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await server.send_all(b"x")
        await port.urc('+QIURC: "recv",0')
        assert emu.boots == 1
        emu.reboot_during(r"AT\+QIRD=0,1500")
        await port.write(b"AT+QIRD=0,1500\r")
        with trio.fail_after(5):
            assert await server.receive_some(10) == b""  # its sockets are gone
        got = await _probe_until_booted(port)
        assert b"RDY" not in got and b"+QIRD" not in got and b"+CPIN" not in got
        assert got.endswith(b"AT\r\r\nOK\r\n")  # echo is on again
        assert emu.boots == 2
        assert emu.lost == ["reboot AT+QIRD=0,1500"]
        assert await port.ok("AT+QISTATE") == []
        assert await port.ok("AT+QIACT?") == []
        await port.write(b"ATE0\r")
        assert await port.expect(b"OK\r\n") == b"ATE0\r\r\nOK\r\n"
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"


async def test_reboot_with_rdy_lost_prints_the_other_boot_urcs():
    async with modem() as (emu, port):
        await port.ok("ATE0")
        emu.reboot_during(r"AT\+CSQ", boot="nordy")
        await port.write(b"AT+CSQ\r")
        boot = await port.expect(b"+QIND: PB DONE\r\n")
        assert b"RDY" not in boot and b"+CPIN: READY" in boot and b"+CSQ" not in boot
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"
        assert emu.boots == 2


async def test_noise_over_the_control_socket():
    async with modem() as (emu, port):
        assert await run_command(emu, "noise urc 5") == "ok"
        assert await run_command(emu, "noise fragment 1-16") == "ok"
        assert await run_command(emu, "noise garbage 48") == "ok"
        assert await run_command(emu, "noise flip 2") == "ok"
        assert await run_command(emu, "noise glue 1") == "ok"
        assert await run_command(emu, "noise seed 42") == "ok"
        assert await run_command(emu, "noise sendfail 5%") == "ok"
        assert await run_command(emu, r"noise reboot AT\+QIRD=.* nordy") == "ok"
        assert await run_command(emu, "noise") == (
            "ok urc=5 fragment=1-16 garbage=48 flip=2 glue=1 sendfail=5% seed=42 inserted=0 junk=0"
        )
        assert [(r[0].pattern, r[2]) for r in emu._reboot_on] == [(r"AT\+QIRD=.*", "nordy")]
        assert (await run_command(emu, "status")).endswith(" boots=1")
        assert (await run_command(emu, "noise fragment 0-3")).startswith("error fragment sizes")
        assert (await run_command(emu, "noise fragment 9-3")).startswith("error fragment sizes")
        assert (await run_command(emu, "noise fragment x")).startswith("error expected <min>-<max>")
        assert (await run_command(emu, "noise bogus 1")).startswith("error noise: unknown kind")
        assert (await run_command(emu, "noise reboot AT x")).startswith("error boot must be")
        assert (await run_command(emu, "noise urc")).startswith("error expected noise urc")
        assert await run_command(emu, "noise fragment off") == "ok"
        assert await run_command(emu, "noise off") == "ok"
        assert emu.noise.describe().startswith("urc=0 fragment=off garbage=0 flip=0")
        assert emu._reboot_on == []
        assert "noise urc <N>" in await run_command(emu, "help")
        assert await port.ok("AT") == []


def test_bad_noise_arguments_raise():
    from modemd.emulator import Emulator, EmulatorConfig

    emu = Emulator(EmulatorConfig())
    with pytest.raises(ValueError, match="fragment sizes"):
        emu.noise_fragment(0, 4)
    with pytest.raises(ValueError, match="count"):
        emu.noise_urcs(-1)
    with pytest.raises(ValueError, match="boot must be"):
        emu.reboot_during("AT", boot="loud")


async def test_send_fail_rate_is_seeded():
    async def run() -> list[str]:
        async with modem() as (emu, port), tcp_server() as (sport, accepted):
            await port.ok("ATE0")
            await activate(port)
            await open_client(port, 0, sport)
            await accepted.receive()
            emu.send_fail_rate(0.25)
            return [await port.send(0, b"x") for _ in range(80)]

    first = await run()
    assert 8 <= first.count("SEND FAIL") <= 35 and set(first) == {"SEND OK", "SEND FAIL"}
    assert await run() == first
