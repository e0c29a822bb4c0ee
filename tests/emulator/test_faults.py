"""Fault injection: hang, power, garbage, interleaved URCs."""

import trio

from modemd.emulator import Emulator, EmulatorConfig

from .helpers import Port, activate, modem, open_client, tcp_server


async def test_hang_drops_everything_until_released():
    async with modem() as (emu, port):
        emu.hang(True)
        await port.write(b"AT\r")
        assert await port.drain(0.2) == b""
        emu.hang(False)
        await port.write(b"ATI\r")
        raw = await port.expect(b"OK\r\n")
        assert raw.startswith(b"ATI\r")  # the AT sent while hung was lost, not queued


async def test_power_off_and_on_forgets_everything():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await emu.power_off()
        assert not emu.powered
        with trio.fail_after(5):
            assert await server.receive_some(10) == b""  # the real socket died
        await port.write(b"AT\r")
        assert await port.drain(0.1) == b""
        await emu.power_on()
        assert await port.line() == "RDY"
        await port.expect(b"PB DONE\r\n")
        assert await port.ok("AT+QISTATE") == []
        assert await port.ok("AT+QIACT?") == []
        # power_on while on is a power cycle
        await port.write(b"ATE0\r")
        await port.expect(b"OK\r\n")
        await emu.power_on()
        await port.expect(b"PB DONE\r\n")
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"  # echo is back on


async def test_qpowd_and_pwrkey():
    async with modem() as (emu, port):
        await port.write(b"AT+QPOWD\r")
        assert await port.expect(b"POWERED DOWN\r\n") == b"AT+QPOWD\r\r\nOK\r\n\r\nPOWERED DOWN\r\n"
        with trio.fail_after(5):
            while emu.powered:
                await trio.sleep(0.01)
        await port.write(b"AT\r")
        assert await port.drain(0.1) == b""
        await emu.pwrkey()  # a board with only PWRKEY: boots it
        await port.expect(b"PB DONE\r\n")
        await port.write(b"AT+QPOWD=0\r")
        assert await port.expect(b"OK\r\n") == b"AT+QPOWD=0\r\r\nOK\r\n"
        assert await port.drain(0.1) == b""
        await emu.pwrkey()
        await port.expect(b"PB DONE\r\n")
        await emu.pwrkey()  # a running module powers down normally
        assert await port.expect(b"POWERED DOWN\r\n") == b"\r\nPOWERED DOWN\r\n"
        assert not emu.powered


async def test_power_on_false_starts_silent():
    async with Emulator.open(EmulatorConfig(power_on=False, boot_delay=0)) as emu:
        port = Port(emu.tty_path)
        try:
            await port.write(b"AT\r")
            assert await port.drain(0.1) == b""
            assert not emu.powered
        finally:
            port.close()


async def test_inject_garbage_between_frames():
    async with modem() as (emu, port):
        emu.inject(b"\x00\xff garbage\r\n\x1a")
        assert await port.read_exact(13) == b"\x00\xff garbage\r\n\x1a"
        assert await port.ok("AT") == []


async def test_interleaved_urcs():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        emu.interleave_urcs(True)
        await port.write(b"ATI\r")
        raw = await port.expect(b"OK\r\n")
        urc = b'\r\n+QIND: "csq",24,99\r\n'
        assert (
            raw
            == b"ATI\r\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n" + urc + b"\r\nOK\r\n"
        )
        await server.send_all(b"data")
        assert await port.urc('+QIURC: "recv"') == '+QIURC: "recv",0'
        await port.write(b"AT+QIRD=0\r")
        raw = await port.expect(b"\r\nOK\r\n")
        assert raw == b"AT+QIRD=0\r\r\n+QIRD: 4\r\ndata\r\n" + urc + b"\r\nOK\r\n"
        await port.write(b"AT+QISEND=0,2\r")
        assert await port.expect(b"> ") == b"AT+QISEND=0,2\r" + urc + b"\r\n> "
        await port.write(b"hi")
        assert await port.line() == "SEND OK"
        emu.interleave_urcs(False)
        await port.write(b"ATI\r")
        assert b"+QIND" not in await port.expect(b"OK\r\n")
